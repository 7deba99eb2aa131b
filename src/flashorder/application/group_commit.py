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
one by one, so that each order gets its own answer and no order fails for another's sake.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
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
from flashorder.domain.events import Event
from flashorder.domain.model import Order, OrderId, ProductId

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PendingOrder:
    """An order whose stock is reserved, waiting to be written."""

    order: Order
    reservation: list[ReservationLine]
    idempotency_key: str | None
    fingerprint: str
    body: dict[str, object]
    #: Resolves to None once committed, or to the stored answer to replay instead.
    done: asyncio.Future[StoredResponse | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    #: The events the order recorded. A batch that rolls back has already taken them from
    #: the order; written alone, it must carry them again.
    events: tuple[Event, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.events = tuple(self.order.events)


#: Writes one order in its own transaction (the fallback); same contract as ``done``.
WriteOne = Callable[[PendingOrder], Awaitable[StoredResponse | None]]


class _BatchRefused(Exception):
    """Some order of the batch cannot be written as it is: write them one by one."""


class Confirm(Protocol):
    """Confirms the reservations of committed orders in the stock gate (``StockGate.confirm``)."""

    async def __call__(self, *order_ids: OrderId) -> None: ...


class GroupCommit:
    """One writer task per process; ``submit`` queues an order, its future gives the outcome.

    The writer also confirms the reservations of the orders it committed, one gate call per
    batch, off the callers' path: a reservation left unconfirmed (Redis down, the process
    killed) is confirmed by reconciliation, which finds its order in the database.
    """

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        write_one: WriteOne,
        *,
        confirm: Confirm,
        max_batch: int = 500,
    ):
        self._uow = uow
        self._write_one = write_one
        self._confirm = confirm
        self._max_batch = max_batch
        self._confirming: set[asyncio.Task[None]] = set()
        self._queue: asyncio.Queue[PendingOrder] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.orders = 0

    def submit(self, pending: PendingOrder) -> asyncio.Future[StoredResponse | None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="group-commit")
        self._queue.put_nowait(pending)
        return pending.done

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._confirming, return_exceptions=True)
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.done.done():
                pending.done.set_exception(
                    errors.Unavailable("service", "shutting down", public=True)
                )

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            # Shielded: the writer is only cancelled at shutdown, and a batch whose commit is
            # under way must learn its outcome rather than leave its callers guessing.
            await asyncio.shield(self._write(batch))

    def _confirm_committed(self, batch: list[PendingOrder]) -> None:
        committed = [
            p.order.order_id
            for p in batch
            if p.done.done()
            and not p.done.cancelled()
            and p.done.exception() is None
            and p.done.result() is None
        ]
        if committed:
            task = asyncio.create_task(self._confirmed(committed))
            self._confirming.add(task)
            task.add_done_callback(self._confirming.discard)

    async def _confirmed(self, order_ids: list[OrderId]) -> None:
        try:
            await self._confirm(*order_ids)
        except errors.Unavailable:
            # The database decided; reconciliation brings the gate in line with it.
            log.warning("reservation.confirm_failed", extra={"orders": len(order_ids)})

    async def _write(self, batch: list[PendingOrder]) -> None:
        self.batches += 1
        self.orders += len(batch)
        try:
            await self._write_outcomes(batch)
        finally:
            self._confirm_committed(batch)

    async def _write_outcomes(self, batch: list[PendingOrder]) -> None:
        try:
            if len(batch) == 1:
                raise _BatchRefused
            await self._write_batch(batch)
        except _BatchRefused:
            await asyncio.gather(*(self._write_alone(p) for p in batch))
            return
        except BaseException as exc:
            if not isinstance(exc, errors.Unavailable | asyncio.CancelledError):
                log.exception("group_commit.failed")
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_exception(_fresh(exc))
            if not isinstance(exc, Exception):
                raise
            return
        for pending in batch:
            if not pending.done.done():
                pending.done.set_result(None)

    async def _write_alone(self, pending: PendingOrder) -> None:
        pending.order.events[:] = pending.events
        try:
            result = await self._write_one(pending)
        except Exception as exc:
            if not pending.done.done():
                pending.done.set_exception(exc)
        else:
            if not pending.done.done():
                pending.done.set_result(result)

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


def _fresh(exc: BaseException) -> BaseException:
    """Each waiter gets its own exception: one instance raised in many tasks would gather
    their tracebacks into one another."""
    if isinstance(exc, errors.Unavailable):
        return errors.Unavailable(exc.dependency, exc.reason, public=exc.public)
    if isinstance(exc, asyncio.CancelledError):
        return errors.Unavailable("service", "shutting down", public=True)
    return errors.Unavailable("database", f"batch failed: {type(exc).__name__}")
