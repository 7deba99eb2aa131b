"""The stock promises, checked against the stores themselves after every race: the same
reading (``flashorder_bench.stores``) and the same judgment (``flashorder_bench.checks``) as
the benchmark's, asserted."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.application.ports import StockGate
from flashorder.domain.model import ProductId
from flashorder_bench import checks, stores


async def check_stock(
    engine: AsyncEngine, gate: StockGate | None, product_ids: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Assert no oversell and agreement between the database and the gate; return the figures.

    At rest, for every product: ``stock == available + sold`` where ``sold`` is the sum of the
    quantities of live (not cancelled) orders, ``0 <= available``, and the gate's count equals
    the database's ``available``.
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
        sold = model.sales().get(pid, (0, 0))[0]
        figures[pid] = {"stock": row.stock, "available": row.available, "sold": sold}
    return figures
