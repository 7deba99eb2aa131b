"""The repositories that placing and cancelling an order write through: orders with their
lines, per-user purchase counts and idempotency records. (The orders' events go to the
outbox at commit: ``uow``.)

The same rules as in ``catalogue`` hold: statements built once with bind parameters,
counts changed only by guarded single-statement updates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Row, bindparam, case, insert, select, update
from sqlalchemy.dialects import sqlite

from flashorder.adapters.sql.catalogue import Db
from flashorder.adapters.sql.tables import idempotency_records, order_items, orders, user_purchases
from flashorder.adapters.sql.upsert import mariadb_upsert
from flashorder.application.ports import IdempotencyRecord, PurchaseTake, StoredResponse
from flashorder.domain.model import (
    DiscountPolicyId,
    Order,
    OrderId,
    OrderLine,
    OrderStatus,
    PaymentType,
    ProductId,
    UserId,
)

# --- orders -------------------------------------------------------------------------------------

_or = orders.c
_oi = order_items.c
_INSERT_ORDER = insert(orders)
_INSERT_ITEMS = insert(order_items)
_GET_ORDER = select(orders).where(_or.order_id == bindparam("oid"))
_GET_ORDER_FOR_UPDATE = _GET_ORDER.with_for_update()
_GET_ITEMS = (
    select(_oi.product_id, _oi.quantity, _oi.unit_price)
    .where(_oi.order_id == bindparam("oid"))
    .order_by(_oi.line_no)
)
# Every transition is this one guarded write: the row must still hold the status and the
# version the order was loaded with. Of writers that loaded the same state, one matches.
_SAVE_ORDER = (
    update(orders)
    .where(
        _or.order_id == bindparam("oid"),
        _or.status == bindparam("was"),
        _or.version == bindparam("prev_version"),
    )
    .values(
        status=bindparam("new_status"),
        version=bindparam("new_version"),
        updated_at=bindparam("at"),
        pay_by=bindparam("pay_by"),
        paid_at=bindparam("paid_at"),
        payment_ref=bindparam("payment_ref"),
        deadline_extended=bindparam("extended"),
    )
)
# The expirers' claim: due orders, locked, skipping those another transaction holds (a
# concurrent expirer's batch, or a payment or cancel of that order in flight). SQLite has no
# row locks and ignores the clause: its writers take turns anyway.
_DUE = (
    select(_or.order_id)
    .where(_or.status == OrderStatus.CREATED.value, _or.pay_by <= bindparam("at"))
    .order_by(_or.pay_by)
    .limit(bindparam("n"))
    .with_for_update(skip_locked=True)
)
_GET_ORDERS = select(orders).where(_or.order_id.in_(bindparam("oids", expanding=True)))
_GET_ITEMS_OF = (
    select(_oi.order_id, _oi.product_id, _oi.quantity, _oi.unit_price)
    .where(_oi.order_id.in_(bindparam("oids", expanding=True)))
    .order_by(_oi.order_id, _oi.line_no)
)


class SqlOrders:
    def __init__(self, db: Db) -> None:
        self._db = db
        #: The orders written in this unit of work: their events go to the outbox at commit.
        self.written: list[Order] = []

    async def add(self, order: Order) -> None:
        await self.add_many([order])

    async def add_many(self, orders: Sequence[Order]) -> None:
        if not orders:
            return
        # Three statements whatever the number of orders: with every VALUES slot a bind
        # parameter, the driver sends each list as one multi-row INSERT.
        rows = [_order_row(order) for order in orders]
        what = f"order {orders[0].order_id!r}" if len(orders) == 1 else "an order of the batch"
        await self._db.insert_new(_INSERT_ORDER, rows if len(rows) > 1 else rows[0], what)
        items = [
            {
                "order_id": order.order_id,
                "line_no": n,
                "product_id": line.product_id,
                "quantity": line.quantity,
                "unit_price": line.unit_price,
            }
            for order in orders
            for n, line in enumerate(order.lines, start=1)
        ]
        if items:
            await self._db.run(_INSERT_ITEMS, items)
        self.written.extend(orders)

    async def get(self, order_id: OrderId, *, for_update: bool = False) -> Order | None:
        stmt = _GET_ORDER_FOR_UPDATE if for_update else _GET_ORDER
        row = (await self._db.run(stmt, {"oid": order_id})).first()
        if row is None:
            return None
        items = await self._db.run(_GET_ITEMS, {"oid": order_id})
        return _order(row, tuple(_line(i) for i in items))

    async def due(self, at: datetime, limit: int) -> list[Order]:
        ids = list((await self._db.run(_DUE, {"at": at, "n": limit})).scalars())
        if not ids:
            return []
        rows = await self._db.run(_GET_ORDERS, {"oids": ids})
        lines: dict[str, list[OrderLine]] = defaultdict(list)
        for item in await self._db.run(_GET_ITEMS_OF, {"oids": ids}):
            lines[item.order_id].append(_line(item))
        found = [_order(row, tuple(lines[row.order_id])) for row in rows]
        return sorted(found, key=lambda order: order.pay_by)

    async def save(self, order: Order) -> bool:
        params = {
            "oid": order.order_id,
            "was": order.guard_status.value,
            "prev_version": order.version - 1,
            "new_status": order.status.value,
            "new_version": order.version,
            "at": order.updated_at,
            "pay_by": order.pay_by,
            "paid_at": order.paid_at,
            "payment_ref": order.payment_ref,
            "extended": order.deadline_extended,
        }
        if (await self._db.run(_SAVE_ORDER, params)).rowcount != 1:
            return False
        if not any(seen is order for seen in self.written):
            self.written.append(order)
        # Saved: the next transition of this object is guarded by the state just written.
        order.loaded_status = None
        return True


def _order_row(order: Order) -> dict[str, object]:
    return {
        "order_id": order.order_id,
        "user_id": order.user_id,
        "status": order.status.value,
        "discount_policy_id": order.discount_policy_id,
        "discount_amount": order.discount_amount,
        "delivery_fee": order.delivery_fee,
        "payment_amount": order.payment_amount,
        "payment_type": order.payment_type.value,
        "version": order.version,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
        "pay_by": order.pay_by,
        "paid_at": order.paid_at,
        "payment_ref": order.payment_ref,
        "deadline_extended": order.deadline_extended,
    }


def _line(item: Row[Any]) -> OrderLine:
    return OrderLine(ProductId(item.product_id), item.quantity, item.unit_price)


def _order(row: Row[Any], lines: tuple[OrderLine, ...]) -> Order:
    return Order(
        order_id=OrderId(row.order_id),
        user_id=UserId(row.user_id),
        lines=lines,
        discount_policy_id=(
            None if row.discount_policy_id is None else DiscountPolicyId(row.discount_policy_id)
        ),
        discount_amount=row.discount_amount,
        delivery_fee=row.delivery_fee,
        payment_amount=row.payment_amount,
        payment_type=PaymentType(row.payment_type),
        status=OrderStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        pay_by=row.pay_by,
        version=row.version,
        paid_at=row.paid_at,
        payment_ref=row.payment_ref,
        deadline_extended=bool(row.deadline_extended),
    )


# --- per-user purchase counts -------------------------------------------------------------------

_up = user_purchases.c
# SQLite has one writer at a time, so one upsert decides: it inserts the first purchase, or adds
# to the count when the guard allows, and reports one row only when it counted.
_TAKE_SQLITE = sqlite.insert(user_purchases).values(
    user_id=bindparam("uid"), product_id=bindparam("pid"), quantity=bindparam("q")
)
_TAKE_SQLITE = _TAKE_SQLITE.on_conflict_do_update(
    index_elements=[_up.user_id, _up.product_id],
    set_={"quantity": _up.quantity + _TAKE_SQLITE.excluded.quantity},
    where=_up.quantity + _TAKE_SQLITE.excluded.quantity <= bindparam("lim"),
)
# MariaDB: first make sure the row exists and hold its lock (an upsert locks the row
# exclusively whether it inserted it or found it), then the guarded update decides. A plain
# INSERT that hits a duplicate would hold a shared lock instead, and two such transactions
# upgrading to exclusive deadlock each other.
_ENSURE_PURCHASE_ROW = mariadb_upsert(
    user_purchases,
    {"user_id": "uid", "product_id": "pid", "quantity": "zero"},
    "quantity = quantity",
)
_TAKE = (
    update(user_purchases)
    .where(
        _up.user_id == bindparam("uid"),
        _up.product_id == bindparam("pid"),
        _up.quantity + bindparam("q") <= bindparam("lim"),
    )
    .values(quantity=_up.quantity + bindparam("q"))
)
_GIVE_BACK = (
    update(user_purchases)
    .where(_up.user_id == bindparam("uid"), _up.product_id == bindparam("pid"))
    # Never below zero, even for a count that predates the product's limit.
    .values(quantity=case((_up.quantity > bindparam("q"), _up.quantity - bindparam("q")), else_=0))
)
_COUNTS = select(_up.user_id, _up.quantity).where(
    _up.product_id == bindparam("pid"), _up.quantity > 0
)
# Many takes at once (MariaDB): one multi-row upsert adds every count and locks its row
# exclusively, then one read per product finds any count past its limit (the caller rolls
# back). Rows go in (product, user) order, so two batches lock shared rows in one order. The
# read returns only the counts past the product's lowest limit in the batch: none, nearly
# always, so there is nothing to decode (reading every count back was 2% of an API worker's
# CPU in a sale). What it returns is then checked against each buyer's own limit.
_ADD_PURCHASES = mariadb_upsert(
    user_purchases,
    {"user_id": "uid", "product_id": "pid", "quantity": "q"},
    "quantity = quantity + VALUES(quantity)",
)
_COUNTS_OVER = select(_up.user_id, _up.quantity).where(
    _up.product_id == bindparam("pid"),
    _up.quantity > bindparam("lim"),
    _up.user_id.in_(bindparam("uids", expanding=True)),
)


class SqlPurchaseLimits:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def take(self, user_id: UserId, product_id: ProductId, quantity: int, limit: int) -> bool:
        if quantity > limit:
            return False
        params = {"uid": user_id, "pid": product_id, "q": quantity, "lim": limit}
        if self._db.sqlite:
            return (await self._db.run(_TAKE_SQLITE, params)).rowcount == 1
        await self._db.run(_ENSURE_PURCHASE_ROW, {"uid": user_id, "pid": product_id, "zero": 0})
        return (await self._db.run(_TAKE, params)).rowcount == 1

    async def take_many(self, takes: Sequence[PurchaseTake]) -> bool:
        wanted: dict[tuple[ProductId, UserId], int] = defaultdict(int)
        limits: dict[tuple[ProductId, UserId], int] = {}
        for take in takes:
            at = (take.product_id, take.user_id)
            wanted[at] += take.quantity
            limits[at] = min(limits.get(at, take.limit), take.limit)
        if any(wanted[at] > limits[at] for at in wanted):
            return False
        if self._db.sqlite:
            # One writer at a time: the single-row guard costs no round trip here.
            for (pid, uid), quantity in sorted(wanted.items()):
                if not await self.take(uid, pid, quantity, limits[pid, uid]):
                    return False
            return True
        if not wanted:
            return True
        rows = [{"uid": uid, "pid": pid, "q": q} for (pid, uid), q in sorted(wanted.items())]
        await self._db.run(_ADD_PURCHASES, rows)
        users_of: dict[ProductId, list[UserId]] = defaultdict(list)
        for pid, uid in wanted:
            users_of[pid].append(uid)
        for pid, uids in users_of.items():
            lowest = min(limits[pid, uid] for uid in uids)
            over = await self._db.run(_COUNTS_OVER, {"pid": pid, "lim": lowest, "uids": uids})
            if any(row.quantity > limits[pid, UserId(row.user_id)] for row in over):
                return False
        return True

    async def give_back(self, user_id: UserId, product_id: ProductId, quantity: int) -> None:
        await self._db.run(_GIVE_BACK, {"uid": user_id, "pid": product_id, "q": quantity})

    async def counts(self, product_id: ProductId) -> dict[UserId, int]:
        rows = await self._db.run(_COUNTS, {"pid": product_id})
        return {UserId(r.user_id): r.quantity for r in rows}


# --- idempotency records ----------------------------------------------------------------------

_ir = idempotency_records.c
_INSERT_RECORD = insert(idempotency_records)
_GET_RECORD = select(_ir.fingerprint, _ir.status_code, _ir.body).where(
    _ir.user_id == bindparam("uid"), _ir.idem_key == bindparam("key")
)


class SqlIdempotencyRecords:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def add(self, user_id: UserId, key: str, response: StoredResponse, at: datetime) -> None:
        await self.add_many([IdempotencyRecord(user_id, key, response, at)])

    async def add_many(self, records: Sequence[IdempotencyRecord]) -> None:
        if not records:
            return
        rows = [
            {
                "user_id": r.user_id,
                "idem_key": r.key,
                "fingerprint": r.response.fingerprint,
                "status_code": r.response.status_code,
                "body": orjson.dumps(r.response.body).decode(),
                "created_at": r.at,
            }
            for r in records
        ]
        what = f"idempotency key {records[0].key!r}" if len(records) == 1 else "a key of the batch"
        await self._db.insert_new(_INSERT_RECORD, rows if len(rows) > 1 else rows[0], what)

    async def get(self, user_id: UserId, key: str) -> StoredResponse | None:
        row = (await self._db.run(_GET_RECORD, {"uid": user_id, "key": key})).first()
        if row is None:
            return None
        return StoredResponse(row.fingerprint, row.status_code, orjson.loads(row.body))
