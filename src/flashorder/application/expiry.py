"""Expiry: unpaid orders past their deadline become EXPIRED and their units go back on sale.

One run takes a batch of due orders in one transaction: it locks them with ``FOR UPDATE
SKIP LOCKED`` (so expirers in several processes take disjoint batches and never wait on
each other), moves each CREATED → EXPIRED with the same guarded write as every other
transition, and gives the batch's units back to the products and the per-user counts. Only
after the commit does the gate get them back, one idempotent release per order.

Exactly once, whatever races it:

- the database: a payment, a cancel or another expirer that changed the order first makes
  the guarded write find another status or version; the order is then not this run's
  (it was locked, so this cannot happen within the transaction; the guard is the proof);
- the gate: ``release`` gives a reservation back once, however often it is called. A
  release that failed (Redis down) is tried again on the next runs; if the process dies
  first, reconciliation finds the database's ``available`` above the gate's count and
  raises the count (``reconcile``).

On SQLite (the embedded default, one process) ``SKIP LOCKED`` does not exist and is not
needed: the process's writers take turns on one queue, so two runs never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import defaultdict
from dataclasses import dataclass, field

from flashorder.application.handlers import Deps
from flashorder.domain import errors
from flashorder.domain.model import OrderId, ProductId, UserId

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Expirer:
    """Expires due orders: ``run_once`` for one pass, ``run`` until stopped."""

    deps: Deps
    batch_size: int = 200
    #: Releases in the gate that failed, retried on the next run.
    unreleased: set[OrderId] = field(default_factory=set)
    expired_total: int = 0

    async def run_once(self) -> list[OrderId]:
        """Expire every order due now, in batches; returns their ids."""
        expired: list[OrderId] = []
        while True:
            batch = await self._expire_batch()
            expired += batch
            if len(batch) < self.batch_size:
                break
        await self._release(expired)
        return expired

    async def run(self, stop: asyncio.Event, *, every: float) -> None:
        """Run until ``stop`` is set, a pass every ``every`` seconds (jittered, so that the
        expirers of a deployment spread out). A failed pass is logged and retried."""
        while not stop.is_set():
            try:
                await self.run_once()
            except errors.Unavailable as exc:
                log.warning("expiry.unavailable", extra={"error": exc.detail})
            except Exception:
                log.exception("expiry.failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every * random.uniform(0.8, 1.2))

    async def _expire_batch(self) -> list[OrderId]:
        deps = self.deps
        now = deps.clock()
        async with deps.uow() as uow:
            due = await uow.orders.due(now, self.batch_size)
            orders = [order for order in due if order.expire(now)]
            units: dict[ProductId, int] = defaultdict(int)
            counts: dict[tuple[ProductId, UserId], int] = defaultdict(int)
            for order in orders:
                if not await uow.orders.save(order):
                    # Impossible while the row is locked by this transaction: a bug.
                    raise RuntimeError(f"order {order.order_id} changed under its lock")
                for line in order.lines:
                    units[line.product_id] += line.quantity
                    counts[line.product_id, order.user_id] += line.quantity
            # In the order the write path takes them: per-user counts by (product, user),
            # then the product rows by id, so an expiry and a batch of orders cannot deadlock.
            for (product_id, user_id), quantity in sorted(counts.items()):
                await uow.purchases.give_back(user_id, product_id, quantity)
            for product_id in sorted(units):
                await uow.products.give_back_stock(product_id, units[product_id])
            await uow.commit()
        if units:
            deps.placement.stock_changed(list(units))
        self.expired_total += len(orders)
        if orders:
            log.info("expiry.expired", extra={"orders": len(orders)})
        return [order.order_id for order in orders]

    async def _release(self, order_ids: list[OrderId]) -> None:
        self.unreleased.update(order_ids)
        for order_id in sorted(self.unreleased):
            try:
                await self.deps.stock.release(order_id)
            except errors.Unavailable:
                # Redis is down: the rest wait for the next run (reconciliation repairs the
                # counts if this process dies first).
                return
            self.unreleased.discard(order_id)
