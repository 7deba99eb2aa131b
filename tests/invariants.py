"""The promises of DESIGN.md, checked against the stores themselves after every race."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.application.ports import StockGate
from flashorder.domain.model import ProductId


async def check_stock(
    engine: AsyncEngine, gate: StockGate | None, product_ids: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Assert no oversell and agreement between the database and the gate; return the figures.

    At rest, for every product: ``stock == available + sold`` where ``sold`` is the sum of the
    quantities of live (not cancelled) orders, ``0 <= available``, and the gate's count equals
    the database's ``available``.
    """
    figures: dict[str, dict[str, int]] = {}
    async with engine.connect() as conn:
        for pid in product_ids:
            row = (
                await conn.execute(
                    text("SELECT stock, available FROM products WHERE product_id = :p"),
                    {"p": pid},
                )
            ).one()
            sold = (
                await conn.execute(
                    text(
                        "SELECT COALESCE(SUM(i.quantity), 0) FROM order_items i "
                        "JOIN orders o ON o.order_id = i.order_id "
                        "WHERE i.product_id = :p AND o.status = 'CREATED'"
                    ),
                    {"p": pid},
                )
            ).scalar_one()
            stock, available = int(row.stock), int(row.available)
            gate_count = await gate.available(ProductId(pid)) if gate is not None else available
            assert available >= 0, f"{pid}: negative available {available}"
            assert int(sold) <= stock, f"{pid}: oversold {sold} > {stock}"
            assert stock == available + int(sold), f"{pid}: {stock} != {available} + {sold}"
            assert gate_count == available, f"{pid}: gate {gate_count} != database {available}"
            figures[pid] = {"stock": stock, "available": available, "sold": int(sold)}
    return figures
