"""``SaleFigures`` over the write model's tables: products, orders by status, the outbox.

Read-only connections (no write lock on SQLite). The per-product order counts walk the
``order_items`` index on ``product_id`` and join each line's order by primary key: their cost
grows with the orders of the watched products, which is why the sale page reads them once per
process per second, never per viewer.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import Row, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.sql.engine import READ_ONLY
from flashorder.adapters.sql.errors import unavailable_on_failure
from flashorder.adapters.sql.tables import order_items, orders, outbox, products
from flashorder.application.ports import OutboxState, ProductSale
from flashorder.domain.model import ProductId

_p, _o, _i, _x = products.c, orders.c, order_items.c, outbox.c

_COLUMNS = (_p.product_id, _p.name, _p.stock, _p.available, _p.updated_at)
_BY_ID = select(*_COLUMNS).where(_p.product_id.in_(bindparam("ids", expanding=True)))
_NEWEST = select(*_COLUMNS).order_by(_p.updated_at.desc(), _p.product_id).limit(bindparam("n"))
_ORDERS_OF = (
    select(_i.product_id, _o.status, func.count())
    .select_from(order_items.join(orders, _o.order_id == _i.order_id))
    .where(_i.product_id.in_(bindparam("ids", expanding=True)))
    .group_by(_i.product_id, _o.status)
)
_BY_STATUS = select(_o.status, func.count()).group_by(_o.status)
_OUTBOX = select(func.count(), func.min(_x.occurred_at)).where(_x.published_at.is_(None))


class SqlSaleFigures:
    """``SaleFigures`` on MariaDB or SQLite."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._reader = engine.execution_options(**{READ_ONLY: True})

    async def products(
        self, product_ids: Collection[ProductId], *, newest: int = 0
    ) -> list[ProductSale]:
        rows: dict[str, Row[Any]] = {}
        with unavailable_on_failure():
            async with self._reader.connect() as conn:
                if newest > 0:
                    for row in await conn.execute(_NEWEST, {"n": newest}):
                        rows[row.product_id] = row
                wanted = [p for p in product_ids if p not in rows]
                if wanted:
                    for row in await conn.execute(_BY_ID, {"ids": wanted}):
                        rows[row.product_id] = row
                counts: dict[str, dict[str, int]] = {p: {} for p in rows}
                if rows:
                    found = await conn.execute(_ORDERS_OF, {"ids": list(rows)})
                    for product_id, status, n in found:
                        counts[product_id][status] = int(n)
        listed = sorted(rows.values(), key=lambda r: (r.updated_at, r.product_id), reverse=True)
        return [
            ProductSale(
                product_id=ProductId(r.product_id),
                name=r.name,
                stock=int(r.stock),
                available=int(r.available),
                orders=counts[r.product_id],
            )
            for r in listed
        ]

    async def orders_by_status(self) -> Mapping[str, int]:
        with unavailable_on_failure():
            async with self._reader.connect() as conn:
                return {status: int(n) for status, n in await conn.execute(_BY_STATUS)}

    async def outbox(self) -> OutboxState:
        with unavailable_on_failure():
            async with self._reader.connect() as conn:
                backlog, oldest = (await conn.execute(_OUTBOX)).one()
        return OutboxState(backlog=int(backlog), oldest_at=oldest)
