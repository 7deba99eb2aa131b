"""The promises, checked against the stores themselves after every race: the stock (the same
reading, ``flashorder_bench.stores``, and judgment, ``flashorder_bench.checks``, as the
benchmark's, asserted, with paid and held units apart) and each order's transitions."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.application.ports import StockGate
from flashorder.domain.model import ProductId
from flashorder_bench import checks, stores

_UNITS = text(
    "SELECT o.status, COALESCE(SUM(i.quantity), 0) AS units FROM order_items i "
    "JOIN orders o ON o.order_id = i.order_id WHERE i.product_id = :p GROUP BY o.status"
)


async def check_stock(
    engine: AsyncEngine, gate: StockGate | None, product_ids: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Assert no oversell and agreement between the database and the gate; return the figures.

    At rest, for every product: ``stock == paid + held + available``, where ``paid`` and
    ``held`` are the quantities of PAID and of CREATED (unpaid, within their deadline)
    orders, and ``sold = paid + held`` is what the product reports as sold; ``0 <=
    available``, and the gate's count equals the database's ``available``.
    """
    figures: dict[str, dict[str, int]] = {}
    for pid in product_ids:
        model = (await stores.load_write_model(engine, pid)).only([pid])
        assert pid in model.products, f"{pid}: not in the database"
        assert not (problems := checks.balance_problems(model)), problems
        row = model.products[pid]
        if gate is not None:
            gate_check = checks.gate_check(model, {pid: await gate.available(ProductId(pid))})
            assert gate_check.verdict == "PASS", gate_check.detail
        by_status = await units(engine, pid)
        paid, held = by_status.get("PAID", 0), by_status.get("CREATED", 0)
        assert row.stock == paid + held + row.available, (
            f"{pid}: {row.stock} != paid {paid} + held {held} + available {row.available}"
        )
        sold = model.sales().get(pid, (0, 0))[0]
        figures[pid] = {"stock": row.stock, "available": row.available, "sold": sold}
    return figures


async def units(engine: AsyncEngine, product_id: str) -> dict[str, int]:
    """The product's units in orders, by the orders' status (``PAID``, ``CREATED``: held)."""
    async with engine.connect() as conn:
        rows = await conn.execute(_UNITS, {"p": product_id})
        return {r.status: int(r.units) for r in rows}


async def check_transitions(
    engine: AsyncEngine, order_ids: Collection[str] | None = None
) -> dict[str, str]:
    """Assert promise 7 from the outbox (every committed change's event) and the orders:
    each order left CREATED at most once, its events are one unbroken chain of versions,
    its stored state is its last event's, and every refund has its cause. Returns each
    order's final status.
    """
    async with engine.connect() as conn:
        orders = {
            r.order_id: (r.status, int(r.version))
            for r in await conn.execute(text("SELECT order_id, status, version FROM orders"))
        }
        rows = (
            await conn.execute(
                text(
                    "SELECT aggregate_id, type, aggregate_version, payload FROM outbox "
                    "WHERE type LIKE 'order.%' OR type = 'payment.refund_due' ORDER BY id"
                )
            )
        ).all()
        recorded_payments = {
            r.payment_ref: r.outcome
            for r in await conn.execute(text("SELECT payment_ref, outcome FROM payment_events"))
        }
    chains: dict[str, list[tuple[str, int]]] = defaultdict(list)
    refunds: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r.type == "payment.refund_due":
            refunds[r.aggregate_id].append(r.payload)
        else:
            chains[r.aggregate_id].append((r.type, int(r.aggregate_version)))
    wanted = orders.keys() if order_ids is None else order_ids
    final: dict[str, str] = {}
    for oid in wanted:
        status, version = orders[oid]
        chain = sorted(chains[oid], key=lambda event: event[1])
        types = [t for t, _ in chain]
        assert [v for _, v in chain] == list(range(1, version + 1)), f"{oid}: versions {chain}"
        assert types[0] == "order.created", f"{oid}: {types}"
        counts = Counter(types)
        assert counts["order.created"] == 1, f"{oid}: {types}"
        assert counts["order.paid"] <= 1, f"{oid}: {types}"
        assert counts["order.cancelled"] <= 1, f"{oid}: {types}"
        assert counts["order.deadline_extended"] <= 1, f"{oid}: {types}"
        ends = [t for t in types if t in ("order.paid", "order.expired", "order.cancelled")]
        if "order.expired" in types:
            assert ends == ["order.expired"], f"{oid}: expired and more: {types}"
        last = {"order.paid": "PAID", "order.expired": "EXPIRED", "order.cancelled": "CANCELLED"}
        assert status == (last[ends[-1]] if ends else "CREATED"), f"{oid}: {status} {types}"
        paid_then_cancelled = ends == ["order.paid", "order.cancelled"]
        after_payment = [p for p in refunds[oid] if '"cancelled-after-payment"' in p]
        assert len(after_payment) == int(paid_then_cancelled), f"{oid}: refunds {refunds[oid]}"
        final[oid] = status
    refund_outcomes = sum(1 for outcome in recorded_payments.values() if outcome == "refund-due")
    late_total = sum(1 for ps in refunds.values() for p in ps if '"late-payment"' in p)
    assert late_total == refund_outcomes, f"{late_total} late refunds != {refund_outcomes}"
    return final
