"""The waiting room of queued sales: joining, where am I, admission, the order's check.

Who admits: every API process runs the admission step (``QueueStore.advance``, one script)
of the rooms it serves, every ``tick`` seconds. The step needs no leader: it works from the
time it is given and the state it reads, so N processes stepping a room admit what one
would (the rate's allowance is counted from the time of the last step, whoever ran it).
A room is served by a process while anyone touched it there lately (a join, a look, a
stream, an order): a room nobody looks at does not move, and moves on as soon as someone
looks again.

The step also learns the stock: the caller reads ``available`` (the stock gate's figure,
holds included) just before, the script records "sold out" while it is 0 (every waiting
ticket then says SOLD_OUT) and never lets the turns on exceed the units available: nobody is
admitted for a unit that is not there, and units that come back (an unpaid hold expired, an
order cancelled) re-open admission at the next step.

Streams: one aggregation per process. Each step publishes the room's state; every open
stream derives its ticket's new position from it (``ahead = rank - cursor``) and reads its
ticket from the store only when the line has reached it or its turn ended, so a crowd of
waiting pages costs one script per process per tick, not one per page.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from flashorder.application.ports import QueueStore
from flashorder.domain import errors
from flashorder.domain.model import Product, ProductId, UserId
from flashorder.domain.queue import (
    AdmissionTerms,
    QueueState,
    Ticket,
    TicketStatus,
    sign_admission,
    verify_admission,
)

log = logging.getLogger(__name__)

ProductOf = Callable[[ProductId], Awaitable[Product | None]]
StockLevel = Callable[[ProductId], Awaitable[int]]

#: A room nobody touched in this process for this long is no longer stepped here.
IDLE_SECONDS = 30.0
#: Seconds of steps over which the admission rate is measured.
RATE_WINDOW = 10.0
#: A stream sends a waiting ticket's new position at most this often (a new status at once).
POSITION_EVERY = 1.0
_FINAL = frozenset({TicketStatus.LEFT, TicketStatus.EXPIRED, TicketStatus.ORDERED})


def admission_key(secret: str) -> bytes:
    """The key admission tokens are signed with, derived so that it signs nothing else."""
    return hmac.new(secret.encode(), b"flashorder admission token", hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class TicketView:
    """A ticket as its buyer sees it."""

    ticket: Ticket
    draw_at: datetime
    estimated_wait_seconds: int | None
    admission_token: str | None = None

    def as_json(self) -> dict[str, Any]:
        t = self.ticket
        body: dict[str, Any] = {
            "ticketId": t.ticket_id,
            "productId": t.product_id,
            "userId": t.user_id,
            "status": t.status.value,
            "position": t.position,
            "ahead": t.ahead,
            "estimatedWaitSeconds": self.estimated_wait_seconds,
            "drawAt": self.draw_at.isoformat(),
        }
        if self.admission_token is not None and t.admitted_until_ms is not None:
            body["admissionToken"] = self.admission_token
            body["admittedUntil"] = _instant(t.admitted_until_ms).isoformat()
        return body


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A sale's queue in figures, for its admins and the live sale page."""

    product_id: ProductId
    opens_at: datetime | None
    draw_at: datetime
    per_second: float | None
    window: int | None
    state: QueueState
    #: Admissions per second over the last ``RATE_WINDOW`` seconds of this process's steps.
    measured_per_second: float | None

    def as_json(self) -> dict[str, Any]:
        s = self.state
        return {
            "productId": self.product_id,
            "opensAt": None if self.opens_at is None else self.opens_at.isoformat(),
            "drawAt": self.draw_at.isoformat(),
            "drawn": s.drawn,
            "seed": s.seed,
            "joined": s.joined,
            "waiting": s.waiting,
            "admitted": s.admitted,
            "live": s.live,
            "ordered": s.ordered,
            "expired": s.expired,
            "left": s.left,
            "soldOut": s.sold_out,
            "admissionPerSecond": self.per_second,
            "admittedPerSecond": self.measured_per_second,
            "window": self.window,
        }


_EMPTY = QueueState(False, 0, 0, 0, 0, 0, 0, 0, 0, False, "")


class WaitingRoom:
    """The waiting rooms as this process serves them (see the module)."""

    def __init__(
        self,
        store: QueueStore,
        *,
        product: ProductOf,
        available: StockLevel,
        secret: bytes,
        token_seconds: int = 60,
        window: int = 100,
        tick: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._product = product
        self._available = available
        self._secret = secret
        self._token_ms = token_seconds * 1000
        self._window = window
        self._tick = tick
        self._clock = clock
        self._touched: dict[ProductId, float] = {}
        self._ordered: dict[ProductId, set[UserId]] = {}
        self._states: dict[ProductId, QueueState] = {}
        self._admissions: dict[ProductId, deque[tuple[float, int]]] = {}
        self._stepped: dict[ProductId, asyncio.Event] = {}
        self._watchers: dict[ProductId, int] = {}
        self._closed = False
        #: Steps run: a test's proof that streams share them.
        self.steps = 0

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def _queued(self, product_id: ProductId) -> Product:
        product = await self._product(product_id)
        if product is None:
            raise errors.ProductNotFound(product_id)
        if not product.queued or product.sale_starts_at is None:
            raise errors.NoQueue(product_id)
        return product

    def _touch(self, product_id: ProductId) -> None:
        self._touched[product_id] = time.monotonic()

    # -- the buyer's calls ------------------------------------------------------------------

    async def join(self, product_id: ProductId, user_id: UserId) -> tuple[TicketView, bool]:
        """The buyer's ticket (one per sale: a retry gets the same), and whether it is new."""
        product = await self._queued(product_id)
        assert product.sale_starts_at is not None
        now = _instant(self._now_ms())
        if product.queue_opens_at is not None and now < product.queue_opens_at:
            raise errors.QueueNotOpen(product_id, product.queue_opens_at, now)
        if product.sale_ends_at is not None and now >= product.sale_ends_at:
            raise errors.SaleEnded(product_id, product.sale_ends_at)
        self._touch(product_id)
        ticket, new = await self._store.join(
            product_id,
            user_id,
            ticket_id="t-" + secrets.token_hex(10),
            seed=secrets.token_hex(16),
            now_ms=self._now_ms(),
            starts_ms=_ms(product.sale_starts_at),
        )
        return self._view(product, ticket), new

    async def ticket(
        self, product_id: ProductId, ticket_id: str, *, viewer: UserId | None
    ) -> TicketView:
        """The ticket, for its buyer (``viewer``) or an admin (None)."""
        product = await self._queued(product_id)
        self._touch(product_id)
        ticket = await self._store.ticket(product_id, ticket_id, now_ms=self._now_ms())
        return self._view(product, _owned(ticket, product_id, ticket_id, viewer))

    async def leave(
        self, product_id: ProductId, ticket_id: str, *, viewer: UserId | None
    ) -> TicketView:
        product = await self._queued(product_id)
        ticket = await self._store.ticket(product_id, ticket_id, now_ms=self._now_ms())
        _owned(ticket, product_id, ticket_id, viewer)
        left = await self._store.leave(product_id, ticket_id, now_ms=self._now_ms())
        return self._view(product, _owned(left, product_id, ticket_id, viewer))

    async def follow(
        self, product_id: ProductId, ticket_id: str, *, viewer: UserId | None
    ) -> AsyncIterator[TicketView]:
        """The ticket now, then each change of it, until it reaches a final state."""
        view = await self.ticket(product_id, ticket_id, viewer=viewer)
        # ``view`` is what the stream sent last, ``ticket`` what is known now.
        ticket, sent = view.ticket, time.monotonic()
        yield view
        self._watchers[product_id] = self._watchers.get(product_id, 0) + 1
        try:
            seen = self._states.get(product_id)
            while ticket.status not in _FINAL:
                state = await self._next_state(product_id, seen)
                if state is None:
                    return
                before, seen = seen, state
                self._touch(product_id)
                product = await self._queued(product_id)
                derived = self._derived(ticket, state, before)
                if derived is None:
                    found = await self._store.ticket(product_id, ticket_id, now_ms=self._now_ms())
                    derived = _owned(found, product_id, ticket_id, viewer)
                ticket = derived
                fresh = self._view(product, ticket)
                moved = fresh.ticket.status is not view.ticket.status
                # A new place alone is sent at most once a POSITION_EVERY: a crowd of streams
                # is not a crowd of events every tick.
                due = time.monotonic() - sent >= POSITION_EVERY
                if fresh != view and (moved or due):
                    view, sent = fresh, time.monotonic()
                    yield view
        finally:
            self._watchers[product_id] -= 1
            if not self._watchers[product_id]:
                del self._watchers[product_id]

    def watching(self, product_id: ProductId) -> int:
        """Streams of the room open in this process."""
        return self._watchers.get(product_id, 0)

    async def _next_state(
        self, product_id: ProductId, seen: QueueState | None
    ) -> QueueState | None:
        """The room's state once newer than ``seen``; None once the room is closed."""
        while not self._closed:
            state = self._states.get(product_id)
            if state is not None and state is not seen:
                return state
            await self._stepped.setdefault(product_id, asyncio.Event()).wait()
        return None

    def close(self) -> None:
        """End every stream (the process is stopping)."""
        self._closed = True
        for woken in self._stepped.values():
            woken.set()
        self._stepped.clear()

    def _derived(
        self, ticket: Ticket, state: QueueState, before: QueueState | None
    ) -> Ticket | None:
        """The ticket after a step, from the room's state alone; None when only the store
        can tell (the line reached it, its turn ended, an order may have used it)."""
        if ticket.status in (TicketStatus.WAITING, TicketStatus.SOLD_OUT):
            if not state.drawn:
                return ticket
            if ticket.position is None or ticket.position - 1 < state.cursor:
                return None
            return replace(
                ticket,
                ahead=ticket.position - 1 - state.cursor,
                status=TicketStatus.SOLD_OUT if state.sold_out else TicketStatus.WAITING,
            )
        if ticket.status is TicketStatus.ADMITTED:
            until = ticket.admitted_until_ms or 0
            someone_ordered = before is None or before.ordered != state.ordered
            if self._now_ms() >= until or someone_ordered:
                return None
            return ticket
        return ticket

    def _view(self, product: Product, ticket: Ticket) -> TicketView:
        assert product.sale_starts_at is not None
        token = None
        if ticket.status is TicketStatus.ADMITTED and ticket.admitted_until_ms is not None:
            token = sign_admission(
                self._secret,
                product_id=ticket.product_id,
                user_id=ticket.user_id,
                ticket_id=ticket.ticket_id,
                until_ms=ticket.admitted_until_ms,
            )
        return TicketView(ticket, product.sale_starts_at, self._estimate(product, ticket), token)

    def _estimate(self, product: Product, ticket: Ticket) -> int | None:
        if ticket.status is TicketStatus.ADMITTED:
            return 0
        if ticket.status is not TicketStatus.WAITING or ticket.ahead is None:
            return None
        if ticket.ahead == 0:
            return 0
        rate = self.measured(product.product_id) or product.admission_per_second
        if not rate:
            return None
        return math.ceil((ticket.ahead + 1) / rate)

    # -- the order call ---------------------------------------------------------------------

    def check_order(self, products: Iterable[Product], user_id: UserId, token: str | None) -> None:
        """Refuse an order of a queued product without a valid admission of this user to
        it (no I/O: the token carries what is checked)."""
        now = self._now_ms()
        for product in products:
            if not product.queued:
                continue
            if token is None:
                raise errors.AdmissionRequired(product.product_id)
            verify_admission(
                self._secret, token, product_id=product.product_id, user_id=user_id, now_ms=now
            )

    def note_order(self, products: Iterable[Product], user_id: UserId) -> None:
        """An admitted buyer ordered: their turn is used. Kept here and sent with this
        process's next step (no I/O on the order's path); lost, the turn ends with the
        token's life instead."""
        for product in products:
            if product.queued:
                self._ordered.setdefault(product.product_id, set()).add(user_id)
                self._touch(product.product_id)

    # -- admission ----------------------------------------------------------------------------

    async def stats(self, product_id: ProductId) -> QueueStats:
        product = await self._queued(product_id)
        assert product.sale_starts_at is not None
        state = await self._store.state(product_id) or _EMPTY
        return QueueStats(
            product_id=product_id,
            opens_at=product.queue_opens_at,
            draw_at=product.sale_starts_at,
            per_second=product.admission_per_second,
            window=None if product.admission_per_second is not None else self._window,
            state=state,
            measured_per_second=self.measured(product_id),
        )

    def measured(self, product_id: ProductId) -> float | None:
        samples = self._admissions.get(product_id)
        if not samples or len(samples) < 2:
            return None
        (t0, a0), (t1, a1) = samples[0], samples[-1]
        if t1 <= t0:
            return None
        return round((a1 - a0) / (t1 - t0), 2)

    async def step(self, product_id: ProductId) -> QueueState | None:
        """One admission step of a room (what ``run`` does every tick)."""
        product = await self._product(product_id)
        if product is None or not product.queued or product.sale_starts_at is None:
            return None
        now = self._now_ms()
        if now < _ms(product.sale_starts_at):
            return None
        if product.sale_ends_at is not None and now >= _ms(product.sale_ends_at):
            return None
        ordered = self._ordered.pop(product_id, set())
        try:
            available = await self._available(product_id)
            per_second = product.admission_per_second
            terms = AdmissionTerms(
                now_ms=now,
                starts_ms=_ms(product.sale_starts_at),
                available=available,
                per_second=per_second,
                window=self._window if per_second is None else None,
                token_ms=self._token_ms,
                units_per_turn=product.max_per_user or 1,
                burst_ms=max(250, int(2 * self._tick * 1000)),
            )
            state = await self._store.advance(product_id, terms, sorted(ordered))
        except BaseException:
            # Sent with the next step instead.
            self._ordered.setdefault(product_id, set()).update(ordered)
            raise
        self.steps += 1
        self._record(product_id, state)
        return state

    def _record(self, product_id: ProductId, state: QueueState) -> None:
        at = time.monotonic()
        samples = self._admissions.setdefault(product_id, deque())
        samples.append((at, state.admitted))
        while len(samples) > 2 and at - samples[0][0] > RATE_WINDOW:
            samples.popleft()
        self._states[product_id] = state
        woken = self._stepped.pop(product_id, None)
        if woken is not None:
            woken.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Step the rooms this process serves every ``tick`` seconds until ``stop``."""
        while not stop.is_set():
            started = time.monotonic()
            for product_id in self._serving(started):
                try:
                    await self.step(product_id)
                except Exception:
                    # The next tick tries again; a Redis that is down for a moment must not
                    # end admission for good.
                    log.warning("waiting_room.step_failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self._tick - (time.monotonic() - started))):
                    await stop.wait()

    def _serving(self, now: float) -> Sequence[ProductId]:
        for product_id, touched in list(self._touched.items()):
            idle = now - touched > IDLE_SECONDS
            if idle and product_id not in self._watchers and product_id not in self._ordered:
                del self._touched[product_id]
        return list(self._touched)


def _owned(
    ticket: Ticket | None, product_id: ProductId, ticket_id: str, viewer: UserId | None
) -> Ticket:
    if ticket is None or (viewer is not None and ticket.user_id != viewer):
        # Someone else's ticket looks absent, as someone else's order does.
        raise errors.TicketNotFound(product_id, ticket_id)
    return ticket


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _instant(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
