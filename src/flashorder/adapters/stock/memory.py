"""The in-process twin of the Redis stock gate, for the embedded mode and unit tests.

No method awaits anything, so each runs to completion without another task interleaving:
that is what makes it as atomic as the Lua scripts it mirrors.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from flashorder.adapters.stock.lines import merged_lines
from flashorder.application.ports import (
    GateCorrection,
    GateView,
    ReservationLine,
    StockUnknown,
)
from flashorder.domain import errors
from flashorder.domain.model import OrderId, ProductId, UserId


@dataclass(slots=True)
class _Reservation:
    user_id: UserId
    lines: dict[ProductId, int]
    released: bool
    expires_at: float


class MemoryStockGate:
    """``StockGate`` in process memory, with the Redis gate's semantics."""

    def __init__(self, *, reservation_ttl: float = 7 * 24 * 3600.0) -> None:
        self._ttl = reservation_ttl
        self._available: dict[ProductId, int] = {}
        self._bought: dict[ProductId, dict[UserId, int]] = {}
        self._reservations: dict[OrderId, _Reservation] = {}
        # Mirrors the Redis sorted set: reserve time of every reservation neither confirmed
        # nor released. It outlives an expired reservation until a release clears it.
        self._pending: dict[OrderId, float] = {}
        # Products whose per-user counts reconciliation rebuilt (the Redis gate's
        # ``users-known`` set).
        self._users_known: set[ProductId] = set()

    def _reservation(self, order_id: OrderId) -> _Reservation | None:
        reservation = self._reservations.get(order_id)
        if reservation is not None and reservation.expires_at <= time.monotonic():
            del self._reservations[order_id]
            return None
        return reservation

    async def reserve(
        self, order_id: OrderId, user_id: UserId, lines: Sequence[ReservationLine]
    ) -> None:
        merged = merged_lines(lines)
        if self._reservation(order_id) is not None:
            return
        # Check every line before taking anything: all or nothing.
        for line in merged:
            available = self._available.get(line.product_id)
            if available is None:
                raise StockUnknown(line.product_id)
            if available < line.quantity:
                raise errors.SoldOut(line.product_id)
            if line.max_per_user is not None:
                bought = self._bought.get(line.product_id, {}).get(user_id, 0)
                if bought + line.quantity > line.max_per_user:
                    raise errors.LimitReached(line.product_id, line.max_per_user)
        for line in merged:
            self._available[line.product_id] -= line.quantity
            counts = self._bought.setdefault(line.product_id, {})
            counts[user_id] = counts.get(user_id, 0) + line.quantity
        now = time.monotonic()
        self._reservations[order_id] = _Reservation(
            user_id=user_id,
            lines={line.product_id: line.quantity for line in merged},
            released=False,
            expires_at=now + self._ttl,
        )
        self._pending[order_id] = now

    async def confirm(self, *order_ids: OrderId) -> None:
        for order_id in order_ids:
            reservation = self._reservation(order_id)
            if reservation is not None and not reservation.released:
                self._pending.pop(order_id, None)

    async def release(self, order_id: OrderId) -> bool:
        self._pending.pop(order_id, None)
        reservation = self._reservation(order_id)
        if reservation is None or reservation.released:
            return False
        reservation.released = True
        for product_id, quantity in reservation.lines.items():
            # A missing count is primed from the database, which already counts this release.
            if product_id in self._available:
                self._available[product_id] += quantity
            counts = self._bought.setdefault(product_id, {})
            left = counts.get(reservation.user_id, 0) - quantity
            if left > 0:
                counts[reservation.user_id] = left
            else:
                counts.pop(reservation.user_id, None)
        return True

    async def prime(self, product_id: ProductId, available: int) -> bool:
        if product_id in self._available:
            return False
        self._available[product_id] = available
        return True

    async def put(self, product_id: ProductId, available: int) -> None:
        self._available[product_id] = available

    async def adjust(self, product_id: ProductId, delta: int) -> int:
        available = self._available.get(product_id)
        if available is None:
            raise StockUnknown(product_id)
        if available + delta < 0:
            raise errors.StockBelowCommitted(product_id, committed=available)
        self._available[product_id] = available + delta
        return available + delta

    async def available(self, product_id: ProductId) -> int | None:
        return self._available.get(product_id)

    async def pending(self, older_than_seconds: float) -> list[OrderId]:
        cutoff = time.monotonic() - max(0.0, older_than_seconds)
        due = [(at, order_id) for order_id, at in self._pending.items() if at <= cutoff]
        return [order_id for _, order_id in sorted(due)]

    async def set_user_count(self, product_id: ProductId, user_id: UserId, quantity: int) -> None:
        counts = self._bought.setdefault(product_id, {})
        if quantity > 0:
            counts[user_id] = quantity
        else:
            counts.pop(user_id, None)

    def _in_flight(
        self, product_id: ProductId, skip: Collection[OrderId] = ()
    ) -> dict[OrderId, tuple[UserId, int]]:
        """Pending reservations with a line of the product, except ``skip``."""
        found: dict[OrderId, tuple[UserId, int]] = {}
        for order_id in self._pending:
            reservation = self._reservation(order_id)
            if order_id in skip or reservation is None or reservation.released:
                continue
            quantity = reservation.lines.get(product_id)
            if quantity is not None:
                found[order_id] = (reservation.user_id, quantity)
        return found

    async def view(self, product_id: ProductId) -> GateView:
        return GateView(
            available=self._available.get(product_id),
            in_flight={o: q for o, (_, q) in self._in_flight(product_id).items()},
            users_known=product_id in self._users_known,
        )

    async def correct(
        self,
        product_id: ProductId,
        *,
        available: int,
        committed: Collection[OrderId],
        raise_by_at_most: int | None = None,
        user_counts: Mapping[UserId, int] | None = None,
        dry_run: bool = False,
    ) -> GateCorrection:
        in_flight = self._in_flight(product_id, skip=set(committed))
        held = sum(q for _, q in in_flight.values())
        target = available - held
        before = self._available.get(product_id)
        after = target
        if before is not None and raise_by_at_most is not None:
            after = min(target, before + max(0, raise_by_at_most))
        users: dict[UserId, int] | None = None
        rebuilt: int | None = None
        if user_counts is not None:
            users = dict(user_counts)
            for user_id, quantity in in_flight.values():
                users[user_id] = users.get(user_id, 0) + quantity
            users = {u: q for u, q in users.items() if q > 0}
            old = self._bought.get(product_id, {})
            rebuilt = sum(old.get(u) != q for u, q in users.items())
            rebuilt += sum(u not in users for u in old)
        if not dry_run:
            self._available[product_id] = after
            if users is not None:
                self._bought[product_id] = users
                self._users_known.add(product_id)
        return GateCorrection(
            before=before,
            target=target,
            after=after,
            in_flight=held,
            users_rebuilt=rebuilt,
        )
