"""The repositories of ``SqlUnitOfWork``: Core statements on the unit of work's connection.

This module holds the shared connection handle (``Db``) and the catalogue (products,
discount policies); ``orders`` holds what placing an order writes.

Statements are built once, here, with named bind parameters, so SQLAlchemy compiles each one
once per dialect and serves it from its cache afterwards. Stock and per-user counts change
only through guarded single-statement updates (``… WHERE available >= :q``): the database
checks and changes the row under its lock, so no interleaving of transactions can oversell.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, Executable, Row, bindparam, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from flashorder.adapters.sql.errors import is_duplicate_key, unavailable_on_failure
from flashorder.adapters.sql.tables import discount_policies, order_items, orders, products
from flashorder.domain import errors
from flashorder.domain.model import (
    DiscountKind,
    DiscountPolicy,
    DiscountPolicyId,
    OrderId,
    OrderStatus,
    Product,
    ProductId,
)


class Db:
    """The unit of work's connection, shared by its repositories while the work is open."""

    def __init__(self, *, sqlite: bool) -> None:
        self.sqlite = sqlite
        self.conn: AsyncConnection | None = None

    async def run(self, stmt: Executable, params: Any = None) -> CursorResult[Any]:
        if self.conn is None:
            raise RuntimeError("use the repositories inside `async with unit_of_work:`")
        with unavailable_on_failure():
            return await self.conn.execute(stmt, params)

    async def insert_new(self, stmt: Executable, params: Any, what: str) -> None:
        """Run an INSERT whose duplicate key means ``AlreadyExists(what)``."""
        try:
            await self.run(stmt, params)
        except sa_exc.IntegrityError as exc:
            if is_duplicate_key(exc):
                raise errors.AlreadyExists(what) from exc
            raise


# --- products -----------------------------------------------------------------------------------

_p = products.c
_PRODUCT_COLUMNS = (
    _p.product_id,
    _p.name,
    _p.price,
    _p.stock,
    _p.available,
    _p.max_per_user,
    _p.version,
    _p.sale_starts_at,
    _p.sale_ends_at,
    _p.pay_within_seconds,
    _p.queued,
    _p.queue_opens_at,
    _p.admission_per_second,
    _p.delivery_fee,
)
_GET_PRODUCT = select(*_PRODUCT_COLUMNS).where(_p.product_id == bindparam("pid"))
_GET_PRODUCT_FOR_UPDATE = _GET_PRODUCT.with_for_update()
_GET_PRODUCTS = select(*_PRODUCT_COLUMNS).where(
    _p.product_id.in_(bindparam("pids", expanding=True))
)
_INSERT_PRODUCT = insert(products)
_TAKE_STOCK = (
    update(products)
    .where(_p.product_id == bindparam("pid"), _p.available >= bindparam("q"))
    .values(available=_p.available - bindparam("q"), version=_p.version + 1)
)
_GIVE_BACK_STOCK = (
    update(products)
    .where(_p.product_id == bindparam("pid"))
    .values(available=_p.available + bindparam("q"), version=_p.version + 1)
)
# ``stock`` and ``available`` move together, so ``sold = stock - available`` is unchanged:
# a cut can only remove units nobody has ordered.
_CHANGE_STOCK = (
    update(products)
    .where(_p.product_id == bindparam("pid"), _p.available + bindparam("d") >= 0)
    .values(
        stock=_p.stock + bindparam("d"),
        available=_p.available + bindparam("d"),
        version=_p.version + 1,
        updated_at=bindparam("at"),
    )
)

_CHANGE_SALE = (
    update(products)
    .where(_p.product_id == bindparam("pid"))
    .values(
        sale_starts_at=bindparam("starts"),
        sale_ends_at=bindparam("ends"),
        pay_within_seconds=bindparam("pay_within"),
        queued=bindparam("queued"),
        queue_opens_at=bindparam("queue_opens"),
        admission_per_second=bindparam("admission"),
        delivery_fee=bindparam("fee"),
        updated_at=bindparam("at"),
    )
)

_ALL_PRODUCT_IDS = select(_p.product_id).order_by(_p.product_id)
# Reconciliation: which reservations the database has already paid for. Read-committed, so an
# order whose transaction has not committed is not seen (it is still in flight).
_COMMITTED_AMONG = (
    select(orders.c.order_id)
    .distinct()
    .join(order_items, order_items.c.order_id == orders.c.order_id)
    .where(
        orders.c.order_id.in_(bindparam("oids", expanding=True)),
        orders.c.status.in_([s.value for s in OrderStatus if s.holds_stock]),
        order_items.c.product_id == bindparam("pid"),
    )
)


def _product(row: Row[Any]) -> Product:
    return Product(
        product_id=ProductId(row.product_id),
        name=row.name,
        price=row.price,
        stock=row.stock,
        available=row.available,
        max_per_user=row.max_per_user,
        version=row.version,
        sale_starts_at=row.sale_starts_at,
        sale_ends_at=row.sale_ends_at,
        pay_within_seconds=row.pay_within_seconds,
        queued=bool(row.queued),
        queue_opens_at=row.queue_opens_at,
        admission_per_second=row.admission_per_second,
        delivery_fee=row.delivery_fee,
    )


class SqlProducts:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def get(self, product_id: ProductId, *, for_update: bool = False) -> Product | None:
        stmt = _GET_PRODUCT_FOR_UPDATE if for_update else _GET_PRODUCT
        row = (await self._db.run(stmt, {"pid": product_id})).first()
        return None if row is None else _product(row)

    async def get_many(self, product_ids: Sequence[ProductId]) -> dict[ProductId, Product]:
        if not product_ids:
            return {}
        rows = await self._db.run(_GET_PRODUCTS, {"pids": list(set(product_ids))})
        return {p.product_id: p for p in map(_product, rows)}

    async def add(self, product: Product, at: datetime) -> None:
        row = {
            "product_id": product.product_id,
            "name": product.name,
            "price": product.price,
            "stock": product.stock,
            "available": product.available,
            "max_per_user": product.max_per_user,
            "version": product.version,
            "created_at": at,
            "updated_at": at,
            "sale_starts_at": product.sale_starts_at,
            "sale_ends_at": product.sale_ends_at,
            "pay_within_seconds": product.pay_within_seconds,
            "queued": product.queued,
            "queue_opens_at": product.queue_opens_at,
            "admission_per_second": product.admission_per_second,
            "delivery_fee": product.delivery_fee,
        }
        await self._db.insert_new(_INSERT_PRODUCT, row, f"product {product.product_id!r}")

    async def take_stock(self, product_id: ProductId, quantity: int) -> bool:
        result = await self._db.run(_TAKE_STOCK, {"pid": product_id, "q": quantity})
        return result.rowcount == 1

    async def give_back_stock(self, product_id: ProductId, quantity: int) -> None:
        await self._db.run(_GIVE_BACK_STOCK, {"pid": product_id, "q": quantity})

    async def change_stock(self, product_id: ProductId, delta: int, at: datetime) -> Product | None:
        result = await self._db.run(_CHANGE_STOCK, {"pid": product_id, "d": delta, "at": at})
        if result.rowcount != 1:
            return None
        # MariaDB has no UPDATE … RETURNING; the row is locked by our update, so this read
        # sees exactly what the update wrote.
        return await self.get(product_id)

    async def change_sale(self, product: Product, at: datetime) -> None:
        params = {
            "pid": product.product_id,
            "starts": product.sale_starts_at,
            "ends": product.sale_ends_at,
            "pay_within": product.pay_within_seconds,
            "queued": product.queued,
            "queue_opens": product.queue_opens_at,
            "admission": product.admission_per_second,
            "fee": product.delivery_fee,
            "at": at,
        }
        await self._db.run(_CHANGE_SALE, params)

    async def all_ids(self) -> list[ProductId]:
        return [ProductId(pid) for pid in (await self._db.run(_ALL_PRODUCT_IDS)).scalars()]

    async def committed_among(
        self, product_id: ProductId, order_ids: Collection[OrderId]
    ) -> set[OrderId]:
        if not order_ids:
            return set()
        params = {"pid": product_id, "oids": list(order_ids)}
        return {OrderId(oid) for oid in (await self._db.run(_COMMITTED_AMONG, params)).scalars()}


# --- discount policies ------------------------------------------------------------------------

_dp = discount_policies.c
_INSERT_POLICY = insert(discount_policies)
_GET_POLICY = select(discount_policies).where(_dp.policy_id == bindparam("pid"))


class SqlDiscountPolicies:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def get(self, policy_id: DiscountPolicyId) -> DiscountPolicy | None:
        row = (await self._db.run(_GET_POLICY, {"pid": policy_id})).first()
        if row is None:
            return None
        return DiscountPolicy(
            policy_id=DiscountPolicyId(row.policy_id),
            kind=DiscountKind(row.kind),
            value=row.value,
            min_order_amount=row.min_order_amount,
            max_discount=row.max_discount,
            valid_from=row.valid_from,
            valid_until=row.valid_until,
        )

    async def add(self, policy: DiscountPolicy) -> None:
        row = {
            "policy_id": policy.policy_id,
            "kind": policy.kind.value,
            "value": policy.value,
            "min_order_amount": policy.min_order_amount,
            "max_discount": policy.max_discount,
            "valid_from": policy.valid_from,
            "valid_until": policy.valid_until,
        }
        await self._db.insert_new(_INSERT_POLICY, row, f"discount policy {policy.policy_id!r}")
