"""``UnitOfWork`` on SQLAlchemy Core: one connection, one transaction, nothing shared.

    async with SqlUnitOfWorkFactory(engine)() as uow:
        await uow.orders.add(order)          # order and items
        await uow.commit()                   # + its events into the outbox, one transaction

Errors (see ``sql.errors``): database failures become ``errors.Unavailable("database")``;
deadlocks and lock wait timeouts the narrower ``SerializationFailure``, after which nothing
of the work was committed and the whole unit of work may be run again. A duplicate key is
``errors.AlreadyExists`` where the port documents it.

A failure of ``commit`` itself (the link lost while COMMIT was in flight) leaves the outcome
unknown; callers that must know read their write back (the idempotency record is for that).
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.sql.catalogue import Db, SqlDiscountPolicies, SqlProducts
from flashorder.adapters.sql.engine import is_sqlite, wait_turn, writer_queue
from flashorder.adapters.sql.errors import SerializationFailure, release, unavailable_on_failure
from flashorder.adapters.sql.orders import SqlIdempotencyRecords, SqlOrders, SqlPurchaseLimits
from flashorder.adapters.sql.outbox import INSERT_EVENTS, event_rows
from flashorder.adapters.sql.payments import SqlPaymentRecords
from flashorder.application.ports import (
    DiscountPolicies,
    IdempotencyRecords,
    OrderRepository,
    PaymentRecords,
    ProductRepository,
    PurchaseLimits,
)
from flashorder.domain.events import Event

__all__ = ["SerializationFailure", "SqlUnitOfWork", "SqlUnitOfWorkFactory"]


class SqlUnitOfWork:
    """One transaction on a pooled connection; entered once, never shared between tasks.

    Entering checks out a connection and begins; ``commit`` commits; leaving without a
    commit rolls back. The connection goes back to the pool on leaving, whatever happened.
    """

    def __init__(self, engine: AsyncEngine, *, writers: asyncio.Lock | None) -> None:
        self._engine = engine
        self._db = Db(sqlite=is_sqlite(engine))
        self._writers = writers
        self._holds_writers = False
        self._entered = False
        # Typed as the ports: the Protocol's attributes are writable, hence invariant.
        self._orders = SqlOrders(self._db)
        self._recorded: tuple[Event, ...] = ()
        self.products: ProductRepository = SqlProducts(self._db)
        self.orders: OrderRepository = self._orders
        self.purchases: PurchaseLimits = SqlPurchaseLimits(self._db)
        self.idempotency: IdempotencyRecords = SqlIdempotencyRecords(self._db)
        self.discounts: DiscountPolicies = SqlDiscountPolicies(self._db)
        self.payments: PaymentRecords = SqlPaymentRecords(self._db)

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a unit of work runs once; ask the factory for a new one")
        self._entered = True
        if self._writers is not None:
            await wait_turn(self._writers)
            self._holds_writers = True
        try:
            with unavailable_on_failure():
                conn = await self._engine.connect()
        except BaseException:
            self._release_writers()
            raise
        try:
            with unavailable_on_failure():
                await conn.begin()
        except BaseException:
            await release(conn)
            self._release_writers()
            raise
        self._db.conn = conn
        return self

    def record(self, *events: Event) -> None:
        self._recorded += events

    async def commit(self) -> None:
        conn = self._db.conn
        if conn is None:
            raise RuntimeError("commit inside `async with unit_of_work:`, once")
        written = self._orders.written
        # One statement for every event of the work, whatever the number of orders.
        events = [event for order in written for event in order.events]
        events += self._recorded
        if events:
            await self._db.run(INSERT_EVENTS, event_rows(events))
        # Detached first: after a commit (or a failed one) the repositories are unusable, so
        # nothing can slip into a second, implicit transaction on the same connection.
        self._db.conn = None
        try:
            with unavailable_on_failure():
                await conn.commit()
        finally:
            await release(conn)
            self._release_writers()
        # Cleared only once committed: a unit of work that failed can be run again with them.
        for order in written:
            order.events.clear()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._db.conn = self._db.conn, None
        if conn is not None:
            # Not committed: closing rolls the transaction back.
            await release(conn)
        self._release_writers()

    def _release_writers(self) -> None:
        if self._holds_writers and self._writers is not None:
            self._holds_writers = False
            self._writers.release()


class SqlUnitOfWorkFactory:
    """``UnitOfWorkFactory``: each call makes a fresh unit of work on the shared engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # SQLite: this process's queue of writers (see ``sql.engine.writing``); None on MariaDB.
        self._writers = writer_queue(engine)

    def __call__(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self._engine, writers=self._writers)
