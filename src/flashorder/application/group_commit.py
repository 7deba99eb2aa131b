"""Group commit: the orders of concurrent requests share one database transaction.

A durable commit waits for the disk (an fsync), and on a hot product every order's
transaction also holds the product's row lock until its commit is done: one transaction per
order caps a hot product at one order per fsync. Here each process runs one writer that
takes every order waiting at that moment and writes them in one transaction: a few
multi-row statements (orders, items, outbox, per-user counts, idempotency records) whatever
the batch's size, one guarded stock update per product for the batch's total, one commit.
The writer is the one sequential part of the pipeline and each statement waits a turn of a
busy event loop, so a statement per order would cap a process at a few hundred orders/s.
While it commits, the next batch gathers, so batches grow with the load and no time is spent
waiting for a batch to fill.

Only orders whose stock the gate already reserved come here, so a batch nearly always goes
through whole. When it does not (the database refuses a product's total, a per-user count,
or an idempotency key it already holds), the batch is rolled back and its orders are written
one by one (``write_order``), so that each order gets its own answer and no order fails for
another's sake.

There is always a group commit: with batching off, each order is a batch of one, written in
its caller's task (orders still run concurrently, each in its own transaction).

This is also the one place where a reservation is settled once its order's write is over
(``_settle``), whether or not the caller still waits for it:

- committed: the reservation is confirmed in the gate, one call per batch, off the callers'
  path (a reservation left unconfirmed, Redis down or the process killed, is confirmed by
  reconciliation, which finds its order in the database);
- not written, or replayed (its idempotency key was recorded already): the reservation is
  released, before its caller hears the outcome, so that the stock is back in the gate by
  the time the refusal is answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Protocol

from flashorder.application.ports import (
    IdempotencyRecord,
    PurchaseTake,
    ReservationLine,
    StoredResponse,
    UnitOfWorkFactory,
)
from flashorder.domain import errors
from flashorder.domain.model import Order, OrderId, ProductId

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PendingOrder:
    """An order whose stock is reserved (or locked), waiting to be written."""

    order: Order
    reservation: list[ReservationLine]
    idempotency_key: str | None
    fingerprint: str
    body: dict[str, object]
    #: Resolves to None once committed, or to the stored answer to replay instead; or to the
    #: error that kept the order out. Resolved once its reservation is settled.
    done: asyncio.Future[StoredResponse | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


#: How a write ended: None (committed), the stored answer to replay, or what refused it.
Outcome = StoredResponse | BaseException | None


class Settling(Protocol):
    """What settling needs of the stock gate (``StockGate.confirm`` and ``release``)."""

    async def confirm(self, *order_ids: OrderId) -> None: ...

    async def release(self, order_id: OrderId) -> bool: ...


class OutcomeUnknown(Exception):
    """The caller was cancelled while its order was being written.

    The batch may still commit the order; it settles the reservation either way, and
    ``pending.done`` tells the outcome once it is known.
    """

    def __init__(self, pending: PendingOrder) -> None:
        super().__init__(pending.order.order_id)
        self.pending = pending


class _BatchRefused(Exception):
    """Some order of the batch cannot be written as it is: write them one by one."""


class GroupCommit:
    """One writer task per process (``batching``), or a batch of one per caller.

    ``write`` hands an order over and waits for its outcome; ``close`` ends the writer, fails
    the orders still queued and waits for every settlement under way.
    """

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        stock: Settling,
        *,
        max_batch: int = 500,
        batching: bool = True,
    ):
        self._uow = uow
        self._stock = stock
        self._max_batch = max_batch
        self._batching = batching
        self._settling: set[asyncio.Task[None]] = set()
        self._queue: asyncio.Queue[PendingOrder] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None
        self.batches = 0
        self.orders = 0

    async def write(self, pending: PendingOrder) -> StoredResponse | None:
        """Write the order: None once committed, or the stored answer to replay instead.

        Raises what kept the order out (SoldOut, LimitReached, IdempotencyKeyReused,
        Unavailable), or OutcomeUnknown when the caller is cancelled meanwhile.
        """
        if self._batching:
            self._submit(pending)
        else:
            try:
                await self._write([pending])
            except BaseException:
                # Cancelled mid-write: the order was settled as not written; nobody waits.
                pending.done.add_done_callback(_retrieve)
                raise
        done = pending.done
        if done.done():
            return done.result()
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            raise OutcomeUnknown(pending) from None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)
        queued: list[PendingOrder] = []
        while not self._queue.empty():
            queued.append(self._queue.get_nowait())
        if queued:
            self._settle(
                queued,
                [errors.Unavailable("service", "shutting down", public=True) for _ in queued],
            )
        await asyncio.gather(*self._settling, return_exceptions=True)

    def _submit(self, pending: PendingOrder) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="group-commit")
        self._queue.put_nowait(pending)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            # Shielded: the writer is only cancelled at shutdown, and a batch whose commit is
            # under way must learn its outcome rather than leave its callers guessing.
            self._writing = asyncio.ensure_future(self._write(batch))
            await asyncio.shield(self._writing)

    async def _write(self, batch: list[PendingOrder]) -> None:
        self.batches += 1
        self.orders += len(batch)
        try:
            outcomes = await self._outcomes(batch)
        except BaseException as exc:
            # Cancelled mid-write (the caller of a batch of one): settled as not written, as a
            # transaction cut short rolls back.
            self._settle(batch, [_fresh(exc) for _ in batch])
            raise
        self._settle(batch, outcomes)

    async def _outcomes(self, batch: list[PendingOrder]) -> list[Outcome]:
        if len(batch) == 1:
            return [await self._write_alone(batch[0])]
        try:
            await self._write_batch(batch)
        except _BatchRefused:
            return list(await asyncio.gather(*(self._write_alone(p) for p in batch)))
        except Exception as exc:
            if not isinstance(exc, errors.Unavailable):
                log.exception("group_commit.failed")
            return [_fresh(exc) for _ in batch]
        return [None] * len(batch)

    async def _write_alone(self, pending: PendingOrder) -> Outcome:
        try:
            return await write_order(pending, uow=self._uow)
        except Exception as exc:
            return exc

    async def _write_batch(self, batch: list[PendingOrder]) -> None:
        totals: dict[ProductId, int] = defaultdict(int)
        for pending in batch:
            for line in pending.reservation:
                totals[line.product_id] += line.quantity
        async with self._uow() as uow:
            try:
                await uow.orders.add_many([p.order for p in batch])
            except errors.AlreadyExists as exc:
                raise _BatchRefused from exc
            takes = [
                PurchaseTake(p.order.user_id, line.product_id, line.quantity, line.max_per_user)
                for p in batch
                for line in p.reservation
                if line.max_per_user is not None
            ]
            if takes and not await uow.purchases.take_many(takes):
                raise _BatchRefused
            records = [
                IdempotencyRecord(
                    p.order.user_id,
                    p.idempotency_key,
                    StoredResponse(p.fingerprint, 201, p.body),
                    p.order.created_at,
                )
                for p in batch
                if p.idempotency_key is not None
            ]
            try:
                await uow.idempotency.add_many(records)
            except errors.AlreadyExists as exc:
                raise _BatchRefused from exc
            # The hot rows last and in product order, as for a single order.
            for product_id in sorted(totals):
                if not await uow.products.take_stock(product_id, totals[product_id]):
                    raise _BatchRefused
            await uow.commit()

    def _settle(self, batch: list[PendingOrder], outcomes: list[Outcome]) -> None:
        """Settle the reservations of a written batch and resolve its orders' outcomes."""
        committed: list[OrderId] = []
        returned: list[tuple[PendingOrder, Outcome]] = []
        for pending, outcome in zip(batch, outcomes, strict=True):
            if outcome is None:
                committed.append(pending.order.order_id)
                _resolve(pending, None)
            else:
                returned.append((pending, outcome))
        if committed:
            self._spawn(self._confirm(committed))
        if returned:
            self._spawn(self._release(returned))

    async def _confirm(self, order_ids: list[OrderId]) -> None:
        try:
            await self._stock.confirm(*order_ids)
        except errors.Unavailable:
            # The database decided; reconciliation brings the gate in line with it.
            log.warning("reservation.confirm_failed", extra={"orders": len(order_ids)})

    async def _release(self, returned: list[tuple[PendingOrder, Outcome]]) -> None:
        if len(returned) == 1:
            await self._release_one(returned[0][0].order.order_id)
        else:
            await asyncio.gather(*(self._release_one(p.order.order_id) for p, _ in returned))
        for pending, outcome in returned:
            _resolve(pending, outcome)

    async def _release_one(self, order_id: OrderId) -> None:
        try:
            await self._stock.release(order_id)
        except errors.Unavailable:
            # Left pending: reconciliation finds no order behind it and releases it.
            log.warning("reservation.release_failed", extra={"order_id": order_id})

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(work)
        # Held until done: the loop keeps only weak references to tasks.
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)


async def write_order(
    pending: PendingOrder, *, uow: UnitOfWorkFactory, lock_rows: bool = False
) -> StoredResponse | None:
    """Write one order in its own transaction. Returns a stored response to replay instead,
    when the idempotency key turned out to be recorded already (the cache had lost it).

    ``lock_rows`` reads and checks each product ``FOR UPDATE`` first (the lock strategy)."""
    order, reservation, key, fp = (
        pending.order,
        pending.reservation,
        pending.idempotency_key,
        pending.fingerprint,
    )
    async with uow() as work:
        if lock_rows:
            for line in sorted(reservation, key=lambda ln: ln.product_id):
                product = await work.products.get(line.product_id, for_update=True)
                if product is None or product.available < line.quantity:
                    raise errors.SoldOut(line.product_id)
        await work.orders.add(order)
        # In product order, as a batch and a cancel take them: two orders of one buyer may be
        # written at once, and their count rows must not be locked in opposite orders.
        for line in sorted(reservation, key=lambda ln: ln.product_id):
            if line.max_per_user is not None and not await work.purchases.take(
                order.user_id, line.product_id, line.quantity, line.max_per_user
            ):
                raise errors.LimitReached(line.product_id, line.max_per_user)
        if key is not None:
            try:
                await work.idempotency.add(
                    order.user_id,
                    key,
                    StoredResponse(fp, 201, pending.body),
                    order.created_at,
                )
            except errors.AlreadyExists:
                recorded = await work.idempotency.get(order.user_id, key)
                if recorded is None or recorded.fingerprint != fp:
                    raise errors.IdempotencyKeyReused() from None
                return recorded
        # The hot rows go last: every other write is done, so their locks are held only for
        # the updates and the commit. In product order, so that two orders of the same
        # products cannot deadlock.
        for line in sorted(reservation, key=lambda ln: ln.product_id):
            if not await work.products.take_stock(line.product_id, line.quantity):
                raise errors.SoldOut(line.product_id)
        await work.commit()
    return None


def _resolve(pending: PendingOrder, outcome: Outcome) -> None:
    done = pending.done
    if done.done():
        return
    if isinstance(outcome, BaseException):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)


def _retrieve(done: asyncio.Future[StoredResponse | None]) -> None:
    # Marks the outcome as seen: an error nobody awaits would be logged as never retrieved.
    if not done.cancelled():
        done.exception()


def _fresh(exc: BaseException) -> BaseException:
    """Each waiter gets its own exception: one instance raised in many tasks would gather
    their tracebacks into one another."""
    if isinstance(exc, errors.Unavailable):
        return errors.Unavailable(exc.dependency, exc.reason, public=exc.public)
    if isinstance(exc, asyncio.CancelledError):
        return errors.Unavailable("service", "shutting down", public=True)
    return errors.Unavailable("database", f"batch failed: {type(exc).__name__}")
