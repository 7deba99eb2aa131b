"""How an order takes its stock: the strategy, an object the composition root picks once.

- ``ReservePlacement`` (the default): the stock gate reserves every line of the order in one
  atomic step, so that a doomed order never reaches the database; then the group commit
  writes it (with the guarded stock update that keeps the database the final word) and
  settles the reservation.
- ``LockPlacement``: the original design, kept as the benchmark's baseline and at its best:
  the buyer's distributed lock, then one per product, around a transaction that reads the
  stock ``FOR UPDATE``, checks it and writes. The gate is not involved.

Both answer the same way, and both serialise one buyer's concurrent orders where it counts,
on the buyer's units of a product: the lock strategy with the buyer's lock, the default with
no lock at all, because the gate's one script checks and raises the buyer's units of each
product in the same atomic step that takes its stock (DESIGN.md allows "an atomic equivalent
in one script"; the lock cost two Redis round trips per order: docs/benchmarks.md).
Behind the gate the database's guarded per-user count is the final word, in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import Protocol

from flashorder.application.group_commit import GroupCommit, PendingOrder, write_order
from flashorder.application.ports import (
    Locks,
    ReservationLine,
    StockGate,
    StockUnknown,
    StoredResponse,
    UnitOfWorkFactory,
)
from flashorder.application.sold_out import SoldOutCache
from flashorder.application.tracing import NO_TRACER, Tracer
from flashorder.domain import errors
from flashorder.domain.model import Order, ProductId


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """The answer to PlaceOrder. ``replayed`` is True when an idempotent retry got it."""

    status_code: int
    body: dict[str, object]
    replayed: bool = False


class Placement(Protocol):
    async def known_sold_out(self, product_ids: Sequence[ProductId]) -> ProductId | None:
        """One of the products that this process knows to be sold out, or None: an order of
        it is refused before any reservation, lock or write."""

    def stock_changed(self, product_ids: Sequence[ProductId]) -> None:
        """The stock of these products changed here (a cancel, a restock): forget what is
        known of them."""

    async def place(
        self,
        order: Order,
        lines: list[ReservationLine],
        *,
        idempotency_key: str | None,
        fingerprint: str,
    ) -> PlacedOrder:
        """Take the order's stock and write it, or answer as the key's record says.

        Raises SoldOut, LimitReached, IdempotencyKeyReused, DuplicateInFlight, Unavailable,
        or OutcomeUnknown when cancelled while the write's outcome is not known yet.
        """


class ReservePlacement:
    """The gate, then one guarded transaction shared with concurrent orders."""

    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        stock: StockGate,
        writer: GroupCommit,
        sold_out: SoldOutCache | None = None,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        self._tracer = tracer
        self._uow = uow
        self._stock = stock
        self._writer = writer
        self._sold_out = sold_out

    @property
    def sold_out(self) -> SoldOutCache | None:
        """The process's sold-out cache, if any (its size is what a flood could grow)."""
        return self._sold_out

    async def known_sold_out(self, product_ids: Sequence[ProductId]) -> ProductId | None:
        if self._sold_out is None:
            return None
        return await self._sold_out.first_sold_out(product_ids)

    def stock_changed(self, product_ids: Sequence[ProductId]) -> None:
        # This process knows at once; the others within their sold-out cache's time-to-live.
        if self._sold_out is not None:
            self._sold_out.forget(product_ids)

    async def place(
        self,
        order: Order,
        lines: list[ReservationLine],
        *,
        idempotency_key: str | None,
        fingerprint: str,
    ) -> PlacedOrder:
        tracer = self._tracer
        try:
            with tracer.span("stock.reserve"):
                await self._reserve(order, lines)
        except errors.SoldOut as exc:
            # Perhaps sold out just now: the next order reads the count again.
            self.stock_changed([ProductId(exc.product_id)])
            raise
        # The database transaction (a group commit shares it with concurrent orders); the
        # outbox rows carry this span, so the relay and the projector continue the trace.
        with tracer.span("order.write"):
            if tracer.enabled:
                parent = tracer.traceparent()
                order.events[:] = [replace(e, traceparent=parent) for e in order.events]
            # From here the group commit owns the reservation: it confirms or releases it.
            pending = PendingOrder(order, lines, idempotency_key, fingerprint, order.snapshot())
            return _answer(pending, await self._writer.write(pending))

    async def _reserve(self, order: Order, lines: Sequence[ReservationLine]) -> None:
        try:
            await self._stock.reserve(order.order_id, order.user_id, lines)
        except StockUnknown:
            # The gate lost its counts (a fresh or restarted Redis): prime it from the
            # database. Priming only sets a missing count, so concurrent primers agree; the
            # guarded update in the transaction still refuses anything the database cannot
            # honour.
            async with self._uow() as uow:
                products = await uow.products.get_many([line.product_id for line in lines])
            for product in products.values():
                await self._stock.prime(product.product_id, product.available)
            await self._stock.reserve(order.order_id, order.user_id, lines)


class LockPlacement:
    """The original design: every order of a hot product queues on the product's lock (taken
    in product order; waiters are woken on release, not by polling), then on its row."""

    def __init__(self, *, uow: UnitOfWorkFactory, locks: Locks, wait: float = 30.0) -> None:
        self._uow = uow
        self._locks = locks
        #: How long an order waits for a product's lock (its queue can be long); the buyer's
        #: lock waits as long as the locks' own default.
        self._wait = wait

    async def known_sold_out(self, product_ids: Sequence[ProductId]) -> ProductId | None:
        # The original design knows nothing ahead of its transaction.
        return None

    def stock_changed(self, product_ids: Sequence[ProductId]) -> None:
        return None

    async def place(
        self,
        order: Order,
        lines: list[ReservationLine],
        *,
        idempotency_key: str | None,
        fingerprint: str,
    ) -> PlacedOrder:
        async with AsyncExitStack() as held:
            await held.enter_async_context(self._locks.hold(f"user:{order.user_id}"))
            for line in sorted(lines, key=lambda ln: ln.product_id):
                await held.enter_async_context(
                    self._locks.hold(f"product:{line.product_id}", wait=self._wait)
                )
            pending = PendingOrder(order, lines, idempotency_key, fingerprint, order.snapshot())
            replay = await write_order(pending, uow=self._uow, lock_rows=True)
        return _answer(pending, replay)


def _answer(pending: PendingOrder, replay: StoredResponse | None) -> PlacedOrder:
    if replay is not None:
        return PlacedOrder(replay.status_code, replay.body, replayed=True)
    return PlacedOrder(201, pending.body)
