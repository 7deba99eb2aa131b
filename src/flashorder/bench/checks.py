"""The promises of docs/design.md, checked in the stores themselves once the events are drained.

Every query is limited to the run's products (and users) by their id prefix, so the checks
hold on a shared database too (``--target``). Each check is one ``Check``: PASS, FAIL, or
SKIP when it does not apply to the run.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.sql.tables import (
    idempotency_records,
    order_items,
    order_views,
    orders,
    product_sales,
    products,
)
from flashorder.application.ports import StockGate
from flashorder.bench.answers import Answers
from flashorder.bench.kafka_events import CreatedEvents
from flashorder.bench.report import Check
from flashorder.domain.model import ProductId

LIVE = "CREATED"


@dataclass
class WriteModel:
    """The run's slice of the write side: products, and orders with their one line each."""

    stock: dict[str, tuple[int, int, int | None]]  # product → stock, available, max per user
    orders: dict[str, tuple[str, str, int]]  # order → user, status, version
    lines: list[tuple[str, str, int]]  # order, product, quantity

    def sold(self) -> dict[str, tuple[int, int]]:
        """Product → units and lines of live orders."""
        totals: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
        for order_id, product_id, quantity in self.lines:
            if self.orders[order_id][1] == LIVE:
                units, count = totals[product_id]
                totals[product_id] = (units + quantity, count + 1)
        return dict(totals)


async def load_write_model(engine: AsyncEngine, product_prefix: str) -> WriteModel:
    ours = order_items.c.product_id.startswith(product_prefix, autoescape=True)
    async with engine.connect() as conn:
        stock = {
            r.product_id: (int(r.stock), int(r.available), r.max_per_user)
            for r in await conn.execute(
                select(
                    products.c.product_id,
                    products.c.stock,
                    products.c.available,
                    products.c.max_per_user,
                ).where(products.c.product_id.startswith(product_prefix, autoescape=True))
            )
        }
        rows = (
            await conn.execute(
                select(
                    orders.c.order_id,
                    orders.c.user_id,
                    orders.c.status,
                    orders.c.version,
                    order_items.c.product_id,
                    order_items.c.quantity,
                )
                .join(order_items, order_items.c.order_id == orders.c.order_id)
                .where(ours)
            )
        ).all()
    return WriteModel(
        stock=stock,
        orders={r.order_id: (r.user_id, r.status, int(r.version)) for r in rows},
        lines=[(r.order_id, r.product_id, int(r.quantity)) for r in rows],
    )


def stock_checks(model: WriteModel, answers: Answers) -> list[Check]:
    sold = model.sold()
    over = [
        f"{p}: {answers.accepted_units.get(p, 0)} accepted / {sold.get(p, (0, 0))[0]} sold "
        f"of {stock}"
        for p, (stock, _, _) in model.stock.items()
        if answers.accepted_units.get(p, 0) > stock or sold.get(p, (0, 0))[0] > stock
    ]
    unbalanced = [
        f"{p}: {stock} != {available} + {sold.get(p, (0, 0))[0]}"
        for p, (stock, available, _) in model.stock.items()
        if available < 0 or stock != available + sold.get(p, (0, 0))[0]
    ]
    units = sum(answers.accepted_units.values())
    total = sum(stock for stock, _, _ in model.stock.values())
    missing = answers.accepted_orders - model.orders.keys()
    return [
        Check.of(
            "accepted <= stock (no oversell)",
            not over,
            "; ".join(over[:3])
            or f"{units:,} units accepted of {total:,} in stock over {len(model.stock):,} products",
        ),
        Check.of(
            "stock == available + sold (database)",
            not unbalanced,
            "; ".join(unbalanced[:3]) or f"{len(model.stock):,} products balance",
        ),
        Check.of(
            "every accepted order is committed",
            not missing,
            f"{len(missing)} accepted but absent, e.g. {sorted(missing)[:2]}"
            if missing
            else f"{len(answers.accepted_orders):,} accepted, {len(model.orders):,} in database",
        ),
    ]


async def gate_check(model: WriteModel, gate: StockGate) -> Check:
    differ = []
    for product_id, (_, available, _) in model.stock.items():
        counted = await gate.available(ProductId(product_id))
        if counted != available:
            differ.append(f"{product_id}: gate {counted} != database {available}")
    return Check.of(
        "Redis gate count == database available",
        not differ,
        "; ".join(differ[:3]) or f"{len(model.stock):,} products agree",
    )


def limit_check(model: WriteModel) -> Check:
    held: Counter[tuple[str, str]] = Counter()
    for order_id, product_id, quantity in model.lines:
        user, status, _ = model.orders[order_id]
        if status == LIVE:
            held[(user, product_id)] += quantity
    limited = {p: m for p, (_, _, m) in model.stock.items() if m is not None}
    over = [
        f"{user} holds {n} of {p} (max {limited[p]})"
        for (user, p), n in held.items()
        if p in limited and n > limited[p]
    ]
    if not limited:
        return Check.skipped("at most maxPerUser per user", "no product of the run has a limit")
    most = max((n for (_, p), n in held.items() if p in limited), default=0)
    return Check.of(
        "at most maxPerUser per user",
        not over,
        "; ".join(over[:3]) or f"{len(held):,} holdings, the largest {most}",
    )


async def idempotency_check(
    engine: AsyncEngine, model: WriteModel, answers: Answers, user_prefix: str
) -> Check:
    """Each key named at most one order in its answers, and in the database each order of
    the run is the one order of exactly one recorded key."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(idempotency_records.c.body).where(
                    idempotency_records.c.user_id.startswith(user_prefix, autoescape=True)
                )
            )
        ).all()
    recorded = Counter(str(orjson.loads(r.body).get("orderId")) for r in rows)
    split = {k: v for k, v in answers.key_orders.items() if len(v) > 1}
    unkeyed = [o for o in model.orders if recorded[o] != 1]
    outcomes = ", ".join(f"{k}: {n:,}" for k, n in answers.retry_outcomes().items())
    problems = [f"key {k} got orders {sorted(v)}" for k, v in list(split.items())[:2]]
    problems += [f"order {o} has {recorded[o]} key records" for o in unkeyed[:2]]
    return Check.of(
        "one order per Idempotency-Key",
        not split and not unkeyed,
        "; ".join(problems) or f"{len(answers.key_orders):,} keys; answers {outcomes}",
    )


def events_check(model: WriteModel, created: CreatedEvents) -> Check:
    wrong = [o for o in model.orders if len(created.event_ids.get(o, ())) != 1]
    phantom = [o for o in created.event_ids if o not in model.orders]
    distinct = sum(len(ids) for ids in created.event_ids.values())
    problems = [f"order {o}: {len(created.event_ids.get(o, ()))} events" for o in wrong[:2]]
    problems += [f"event for unknown order {o}" for o in phantom[:2]]
    return Check.of(
        "exactly one order.created per committed order (Kafka)",
        not wrong and not phantom,
        "; ".join(problems)
        or f"{distinct:,} events for {len(model.orders):,} orders "
        f"({created.messages - distinct:,} redelivered copies)",
    )


async def read_model_check(engine: AsyncEngine, model: WriteModel, product_prefix: str) -> Check:
    async with engine.connect() as conn:
        views = {
            r.order_id: (r.status, int(r.version))
            for r in await conn.execute(
                select(order_views.c.order_id, order_views.c.status, order_views.c.version)
                .join(order_items, order_items.c.order_id == order_views.c.order_id)
                .where(order_items.c.product_id.startswith(product_prefix, autoescape=True))
                .distinct()
            )
        }
        sales = {
            r.product_id: (int(r.sold), int(r.orders))
            for r in await conn.execute(
                select(
                    product_sales.c.product_id, product_sales.c.sold, product_sales.c.orders
                ).where(product_sales.c.product_id.startswith(product_prefix, autoescape=True))
            )
        }
    written = {o: (status, version) for o, (_, status, version) in model.orders.items()}
    sold = {p: s for p, s in model.sold().items() if s != (0, 0)}
    sales = {p: s for p, s in sales.items() if s != (0, 0)}
    problems = [
        f"order {o}: view {views.get(o)} != {written.get(o)}"
        for o in sorted(views.keys() | written.keys())
        if views.get(o) != written.get(o)
    ][:2]
    problems += [
        f"{p}: sales {sales.get(p)} != {sold.get(p)}"
        for p in sorted(sales.keys() | sold.keys())
        if sales.get(p) != sold.get(p)
    ][:2]
    return Check.of(
        "read model == write model",
        not problems,
        "; ".join(problems) or f"{len(views):,} order views, {len(sales):,} product sales agree",
    )


def answer_checks(answers: Answers) -> Sequence[Check]:
    return [
        Check.of(
            "no 5xx answers (closed loop, ceiling)",
            answers.server_errors == 0,
            f"{answers.server_errors:,} 5xx",
        ),
        Check.of(
            "no transport errors (closed loop)",
            answers.transport_errors == 0,
            f"{answers.transport_errors:,} calls without an answer",
        ),
    ]
