"""The service's promises (docs/design.md), checked in the stores once the events are
drained, and the checks that keep a run from passing by accident.

Every check is one ``Check``: PASS, FAIL, or SKIP when it does not apply to the run. A check
with nothing to look at fails (an empty set of products passes nothing), and so does one
that cannot run on a ``--target`` stack unless the run was told to skip it.

The stores are read through ``stores`` (every query limited to the run's products by their
id prefix, so the checks hold on a shared database too); the functions here only judge.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flashorder_bench.answers import Answers
from flashorder_bench.kafka_events import CreatedEvents
from flashorder_bench.report import Check
from flashorder_bench.stores import ReadModel, WriteModel

#: What ``--skip-check`` may name: the checks that need a store the settings may not give.
SKIPPABLE = ("database", "gate", "events")
#: The share of its order calls a phase with stock for all must accept at least.
AMPLE_FLOOR = 0.9


def unavailable(name: str, why: str, skipped: Sequence[str], key: str) -> Check:
    """A check that cannot run: SKIP if ``key`` is in ``skipped`` (``--skip-check``), else
    FAIL, so that a run missing a setting does not pass by leaving its checks out."""
    if key in skipped:
        return Check.skipped(name, f"{why} (--skip-check {key})")
    return Check.of(name, False, f"cannot run: {why}; --skip-check {key} to leave it out")


def _nothing(name: str, what: str) -> Check:
    return Check.of(name, False, f"nothing to check: {what}")


def drained_check(drained: bool, seconds: float, projectors: int, needed: bool) -> Check:
    name = "events drained (/readyz lag 0, a live projector)"
    if needed and projectors < 1:
        return Check.of(name, False, f"no projector reported in /readyz after {seconds:.1f}s")
    return Check.of(name, drained, f"after {seconds:.1f}s, {projectors} projector(s)")


def balance_problems(model: WriteModel) -> list[str]:
    """Each product whose ``available`` is negative or whose stock is not ``available`` plus
    the units of its live orders (which also catches units sold beyond the stock)."""
    sold = model.sales()
    return [
        f"{p}: {row.stock} != {row.available} + {sold.get(p, (0, 0))[0]}"
        for p, row in model.products.items()
        if row.available < 0 or row.stock != row.available + sold.get(p, (0, 0))[0]
    ]


def stock_checks(model: WriteModel, answers: Answers) -> list[Check]:
    names = (
        "accepted <= stock (no oversell)",
        "stock == available + sold (database)",
        "every accepted order is committed",
    )
    if not model.products:
        return [_nothing(n, "no product of the run in the database") for n in names]
    sold = model.sales()
    over = [
        f"{p}: {answers.accepted_units.get(p, 0)} accepted / {sold.get(p, (0, 0))[0]} sold "
        f"of {row.stock}"
        for p, row in model.products.items()
        if answers.accepted_units.get(p, 0) > row.stock or sold.get(p, (0, 0))[0] > row.stock
    ]
    unbalanced = balance_problems(model)
    units = sum(answers.accepted_units.values())
    total = sum(row.stock for row in model.products.values())
    missing = answers.accepted_orders - model.orders.keys()
    committed = (
        Check.of(
            names[2],
            not missing,
            f"{len(missing)} accepted but absent, e.g. {sorted(missing)[:2]}"
            if missing
            else f"{len(answers.accepted_orders):,} accepted, {len(model.orders):,} in database",
        )
        if answers.accepted_orders
        else _nothing(names[2], "no order was accepted")
    )
    return [
        Check.of(
            names[0],
            not over,
            "; ".join(over[:3])
            or f"{units:,} units accepted of {total:,} in stock over {len(model.products):,} "
            "products",
        ),
        Check.of(
            names[1],
            not unbalanced,
            "; ".join(unbalanced[:3]) or f"{len(model.products):,} products balance",
        ),
        committed,
    ]


def sold_out_check(model: WriteModel, answers: Answers, hot: Sequence[str]) -> Check:
    """A hot sale chases its stock with many more requests than units: each of its products
    must end with nothing available, and the accepted units must be its stock (no
    undersell: a run that refused what it could have sold fails)."""
    name = "hot sale sold out (available 0, accepted units == stock)"
    if not hot:
        return _nothing(name, "no hot product in the run")
    problems = []
    for product_id in hot:
        row = model.products.get(product_id)
        if row is None:
            problems.append(f"{product_id}: not in the database")
            continue
        accepted = answers.accepted_units.get(product_id, 0)
        if row.available != 0 or accepted != row.stock:
            problems.append(
                f"{product_id}: {row.available} of {row.stock} still available, "
                f"{accepted} units accepted"
            )
    return Check.of(
        name, not problems, "; ".join(problems[:3]) or f"{len(hot)} hot product(s) sold out"
    )


@dataclass(frozen=True, slots=True)
class Floor:
    """A phase's accepted orders (or calls answered 2xx) and the least it must have."""

    phase: str
    accepted: int
    least: int


def sale_floor(phase: str, accepted: int, stock: int, max_quantity: int = 2) -> Floor:
    """A sale that sells out accepts at least its stock over the largest quantity asked."""
    return Floor(phase, accepted, max(1, math.ceil(stock / max_quantity)))


def ample_floor(phase: str, accepted: int, order_calls: int) -> Floor:
    """A phase with stock for every order accepts nearly every order call."""
    return Floor(phase, accepted, max(1, math.ceil(AMPLE_FLOOR * order_calls)))


def floor_check(floors: Sequence[Floor]) -> Check:
    name = "accepted orders at or above the floor of each phase"
    if not floors:
        return _nothing(name, "no measured phase")
    low = [
        f"{f.phase}: {f.accepted:,} accepted < {f.least:,}" for f in floors if f.accepted < f.least
    ]
    return Check.of(
        name,
        not low,
        "; ".join(low[:3])
        or ", ".join(f"{f.phase} {f.accepted:,} >= {f.least:,}" for f in floors[:4]),
    )


def gate_check(model: WriteModel, counts: Mapping[str, int | None]) -> Check:
    name = "Redis gate count == database available"
    if not model.products:
        return _nothing(name, "no product of the run in the database")
    differ = [
        f"{p}: gate {counts.get(p)} != database {row.available}"
        for p, row in model.products.items()
        if counts.get(p) != row.available
    ]
    return Check.of(
        name, not differ, "; ".join(differ[:3]) or f"{len(model.products):,} products agree"
    )


def limit_check(model: WriteModel) -> Check:
    name = "at most maxPerUser per user"
    if not model.products:
        return _nothing(name, "no product of the run in the database")
    limited = {p: row.max_per_user for p, row in model.products.items() if row.max_per_user}
    if not limited:
        return Check.skipped(name, "no product of the run has a limit")
    held = model.held()
    over = [
        f"{user} holds {n} of {p} (max {limited[p]})"
        for (user, p), n in held.items()
        if p in limited and n > limited[p]
    ]
    most = max((n for (_, p), n in held.items() if p in limited), default=0)
    return Check.of(
        name, not over, "; ".join(over[:3]) or f"{len(held):,} holdings, the largest {most}"
    )


def idempotency_check(model: WriteModel, answers: Answers, recorded: Counter[str]) -> Check:
    """Each key named at most one order in its answers, and in the database each order of
    the run is the one order of exactly one recorded key (``recorded``: order → records)."""
    name = "one order per Idempotency-Key"
    if not answers.key_orders:
        return _nothing(name, "no call carried an Idempotency-Key")
    if not model.orders:
        return _nothing(name, "no order of the run in the database")
    split = {k: v for k, v in answers.key_orders.items() if len(v) > 1}
    unkeyed = [o for o in model.orders if recorded[o] != 1]
    outcomes = ", ".join(f"{k}: {n:,}" for k, n in answers.retry_outcomes().items())
    problems = [f"key {k} got orders {sorted(v)}" for k, v in list(split.items())[:2]]
    problems += [f"order {o} has {recorded[o]} key records" for o in unkeyed[:2]]
    return Check.of(
        name,
        not split and not unkeyed,
        "; ".join(problems) or f"{len(answers.key_orders):,} keys; answers {outcomes}",
    )


def events_check(model: WriteModel, created: CreatedEvents) -> Check:
    name = "exactly one order.created per committed order (Kafka)"
    if not model.orders:
        return _nothing(name, "no order of the run in the database")
    wrong = [o for o in model.orders if len(created.event_ids.get(o, ())) != 1]
    phantom = [o for o in created.event_ids if o not in model.orders]
    distinct = sum(len(ids) for ids in created.event_ids.values())
    problems = [f"order {o}: {len(created.event_ids.get(o, ()))} events" for o in wrong[:2]]
    problems += [f"event for unknown order {o}" for o in phantom[:2]]
    return Check.of(
        name,
        not wrong and not phantom,
        "; ".join(problems)
        or f"{distinct:,} events for {len(model.orders):,} orders "
        f"({created.messages - distinct:,} redelivered copies)",
    )


def read_model_differences(model: WriteModel, read: ReadModel) -> list[str]:
    """How the read model differs from the write model; [] if they agree. A product whose
    every order was cancelled may have a row of zeros, or none."""
    found: list[str] = []
    if missing := model.orders.keys() - read.views.keys():
        found.append(f"{len(missing)} orders have no view, e.g. {sorted(missing)[0]}")
    if extra := read.views.keys() - model.orders.keys():
        found.append(f"{len(extra)} views of orders that do not exist, e.g. {sorted(extra)[0]}")
    stale = sorted(
        o for o in model.orders.keys() & read.views.keys() if read.views[o] != model.orders[o]
    )
    if stale:
        found.append(
            f"{len(stale)} views differ, e.g. {stale[0]}: {read.views[stale[0]]} != "
            f"{model.orders[stale[0]]}"
        )
    sales = model.sales()
    for product_id in sorted(sales.keys() | read.sales.keys()):
        if read.sales.get(product_id, (0, 0)) != sales.get(product_id, (0, 0)):
            found.append(
                f"sales of {product_id}: read {read.sales.get(product_id)} != write "
                f"{sales.get(product_id)}"
            )
    return found


def read_model_check(model: WriteModel, read: ReadModel) -> Check:
    name = "read model == write model"
    if not model.orders:
        return _nothing(name, "no order of the run in the database")
    problems = read_model_differences(model, read)
    return Check.of(
        name,
        not problems,
        "; ".join(problems[:3])
        or f"{len(read.views):,} order views, {len(read.sales):,} product sales agree",
    )


def answer_checks(answers: Answers, *, open_loop: bool) -> list[Check]:
    found = [
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
    if open_loop:
        found.append(
            Check.of(
                "open loop: no 5xx but the request deadline's 503",
                answers.open_server_errors == 0,
                f"{answers.open_server_errors:,} other 5xx; "
                f"{answers.deadline_answers:,} 503 at the deadline",
            )
        )
    return found
