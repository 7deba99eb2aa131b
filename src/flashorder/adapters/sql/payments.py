"""``PaymentRecords`` and ``OrderLookup`` on the write model's tables."""

from __future__ import annotations

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.sql.catalogue import Db
from flashorder.adapters.sql.engine import READ_ONLY, is_sqlite
from flashorder.adapters.sql.errors import unavailable_on_failure
from flashorder.adapters.sql.orders import SqlOrders
from flashorder.adapters.sql.tables import orders, payment_events
from flashorder.application.ports import JsonObject, OrderHead, PaymentRecord
from flashorder.domain.model import OrderId, OrderStatus, PaymentOutcome, PaymentStatus, UserId

_pe = payment_events.c
_INSERT = insert(payment_events)
_GET = select(payment_events).where(_pe.payment_ref == bindparam("ref"))


class SqlPaymentRecords:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def add(self, record: PaymentRecord) -> None:
        row = {
            "payment_ref": record.payment_ref,
            "order_id": record.order_id,
            "amount": record.amount,
            "status": record.status.value,
            "outcome": record.outcome.value,
            "order_status": record.order_status.value,
            "received_at": record.at,
        }
        # On MariaDB a copy of the event that a concurrent transaction is inserting makes
        # this wait for that transaction: AlreadyExists if it commits.
        await self._db.insert_new(_INSERT, row, f"payment event {record.payment_ref!r}")

    async def get(self, payment_ref: str) -> PaymentRecord | None:
        row = (await self._db.run(_GET, {"ref": payment_ref})).first()
        if row is None:
            return None
        return PaymentRecord(
            payment_ref=row.payment_ref,
            order_id=OrderId(row.order_id),
            amount=row.amount,
            status=PaymentStatus(row.status),
            outcome=PaymentOutcome(row.outcome),
            order_status=OrderStatus(row.order_status),
            at=row.received_at,
        )


_HEAD = select(orders.c.user_id, orders.c.version).where(orders.c.order_id == bindparam("oid"))


class SqlOrderLookup:
    """``OrderLookup``: plain reads of the write side, outside any unit of work (on SQLite
    a deferred transaction, which takes no write turn)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._reader = engine.execution_options(**{READ_ONLY: True})
        self._sqlite = is_sqlite(engine)

    async def head(self, order_id: OrderId) -> OrderHead | None:
        with unavailable_on_failure():
            async with self._reader.connect() as conn:
                row = (await conn.execute(_HEAD, {"oid": order_id})).first()
        return None if row is None else OrderHead(UserId(row.user_id), row.version)

    async def snapshot(self, order_id: OrderId) -> JsonObject | None:
        db = Db(sqlite=self._sqlite)
        with unavailable_on_failure():
            async with self._reader.connect() as conn:
                db.conn = conn
                order = await SqlOrders(db).get(order_id)
        return None if order is None else order.snapshot()
