"""What this process knows about sold-out products, so that their orders cost nothing.

A product is sold out when the gate's count is zero (or below): every reservation of it
fails. The gate is shared by every process and host, so this knowledge is too; each process
keeps what it read for ``ttl`` seconds, and while it says "sold out" an order of the product
is refused before any reservation, lock or transaction. The count itself is the mark: it
goes up when stock is added, an order is cancelled or a reservation expires, with nothing
else to clear.

Invariants:

- it only refuses, never admits: whatever it says, no order gets past the gate and the
  guarded update that would not have anyway, so it cannot cause an oversell;
- a refusal rests on a reading taken at most ``ttl`` before (this process's own restocks
  and cancels drop its readings at once): an order that could succeed is refused for at
  most ``ttl`` after the stock came back;
- when the gate cannot be read, nothing is refused: the order goes on to the gate, which
  answers for itself;
- it holds at most ``max_size`` readings, none long past ``ttl``: a flood of orders naming
  made-up product ids costs a bounded map, not a permanent entry each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence

from flashorder.application.expiring import ExpiringMap
from flashorder.application.ports import StockGate
from flashorder.domain import errors
from flashorder.domain.model import ProductId


class SoldOutCache:
    def __init__(
        self,
        gate: StockGate,
        *,
        ttl: float,
        max_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gate = gate
        self._ttl = ttl
        self._clock = clock
        #: product -> sold out, until ``ttl`` after the reading started
        self._readings: ExpiringMap[ProductId, bool] = ExpiringMap(max_size=max_size)
        self._reading: dict[ProductId, asyncio.Task[bool]] = {}
        # Bumped by ``forget``: a reading that started before it may predate the change.
        self._generation = 0

    async def first_sold_out(self, product_ids: Sequence[ProductId]) -> ProductId | None:
        """One of the products that is sold out as far as this process knows, or None."""
        if self._ttl <= 0:
            return None
        now = self._clock()
        stale: list[ProductId] = []
        for pid in product_ids:
            sold_out = self._readings.get(pid, now)
            if sold_out is None:
                stale.append(pid)
            elif sold_out:
                return pid
        # The readings run side by side; each is awaited in turn (no task per caller: a
        # crowd meets a stale reading at once, and a gather would wrap each wait in a task).
        tasks = [(pid, self._reading_of(pid)) for pid in stale]
        for pid, task in tasks:
            # Shielded: a cancelled request does not cancel the reading others wait for.
            if await asyncio.shield(task):
                return pid
        return None

    def forget(self, product_ids: Iterable[ProductId]) -> None:
        """Drop what is known of these products: their stock just changed, here."""
        self._generation += 1
        for pid in product_ids:
            self._readings.discard(pid)

    def _reading_of(self, pid: ProductId) -> asyncio.Task[bool]:
        # One reading per product at a time: a crowd arriving when a reading is stale shares
        # it instead of sending the gate one read each.
        task = self._reading.get(pid)
        if task is None:
            task = asyncio.create_task(self._fetch(pid))
            self._reading[pid] = task
            task.add_done_callback(lambda done: self._done_reading(pid, done))
        return task

    def _done_reading(self, pid: ProductId, task: asyncio.Task[bool]) -> None:
        if self._reading.get(pid) is task:
            del self._reading[pid]

    async def _fetch(self, pid: ProductId) -> bool:
        generation = self._generation
        started = self._clock()
        try:
            available = await self._gate.available(pid)
        except errors.Unavailable:
            return False
        # No count (a fresh Redis) is not sold out: the order primes the gate from the database.
        sold_out = available is not None and available <= 0
        if generation == self._generation:
            self._readings.put(pid, sold_out, expires_at=started + self._ttl, now=self._clock())
        return sold_out

    def __len__(self) -> int:
        return len(self._readings)
