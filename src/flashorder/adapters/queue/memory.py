"""The waiting rooms in memory: the embedded default's twin of ``redis.py``, step for step.

Each method runs without an ``await`` between its reads and writes, which is what makes it
atomic on one event loop, as a script is on Redis. The contract suite holds the two together.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from flashorder.domain.model import ProductId, UserId
from flashorder.domain.queue import (
    LATE,
    AdmissionTerms,
    QueueState,
    Ticket,
    TicketStatus,
    draw_score,
)

_LEFT, _ORDERED, _EXPIRED = "L", "O", "E"


@dataclass(slots=True)
class _Room:
    seed: str = ""
    drawn: bool = False
    cursor: int = 0
    late: int = 0
    joined: int = 0
    admitted: int = 0
    ordered: int = 0
    expired: int = 0
    left: int = 0
    left_waiting: int = 0
    sold_out: bool = False
    allowance: float = 0.0
    at: int | None = None
    #: (score, ticketId), sorted: the line.
    line: list[tuple[int, str]] = field(default_factory=list)
    users: dict[str, str] = field(default_factory=dict)
    tickets: dict[str, str] = field(default_factory=dict)
    #: ticketId -> "L" | "O" | "E" | admitted-until ms.
    st: dict[str, str | int] = field(default_factory=dict)
    #: ticketId -> admitted until (ms): the turns that are on.
    live: dict[str, int] = field(default_factory=dict)

    scores: dict[str, int] = field(default_factory=dict)

    def rank(self, ticket_id: str) -> int:
        return bisect.bisect_left(self.line, (self.scores[ticket_id], ticket_id))

    def view(self, product_id: ProductId, ticket_id: str, now: int) -> Ticket | None:
        user = self.tickets.get(ticket_id)
        if user is None:
            return None
        st = self.st.get(ticket_id)
        until: int | None = None
        if st == _LEFT:
            status = TicketStatus.LEFT
        elif st == _ORDERED:
            status = TicketStatus.ORDERED
        elif st == _EXPIRED:
            status = TicketStatus.EXPIRED
        elif isinstance(st, int):
            until = st
            status = TicketStatus.ADMITTED if st > now else TicketStatus.EXPIRED
        else:
            status = TicketStatus.SOLD_OUT if self.sold_out else TicketStatus.WAITING
        position = ahead = None
        if self.drawn:
            rank = self.rank(ticket_id)
            position = rank + 1
            waiting = status in (TicketStatus.WAITING, TicketStatus.SOLD_OUT)
            ahead = max(0, rank - self.cursor) if waiting else 0
        return Ticket(ticket_id, product_id, user, status, position, ahead, until)

    def state(self) -> QueueState:
        return QueueState(
            drawn=self.drawn,
            cursor=self.cursor,
            joined=self.joined,
            waiting=len(self.line) - self.cursor - self.left_waiting,
            admitted=self.admitted,
            live=len(self.live),
            ordered=self.ordered,
            expired=self.expired,
            left=self.left,
            sold_out=self.sold_out,
            seed=self.seed,
        )


class MemoryQueueStore:
    """``QueueStore`` in this process."""

    def __init__(self) -> None:
        self._rooms: dict[ProductId, _Room] = {}

    async def join(
        self,
        product_id: ProductId,
        user_id: UserId,
        *,
        ticket_id: str,
        seed: str,
        now_ms: int,
        starts_ms: int,
    ) -> tuple[Ticket, bool]:
        room = self._rooms.setdefault(product_id, _Room())
        old = room.users.get(user_id)
        if old is not None:
            st = room.st.get(old)
            passed = isinstance(st, int) and st <= now_ms
            if st not in (_LEFT, _EXPIRED) and not passed:
                view = room.view(product_id, old, now_ms)
                assert view is not None
                return view, False
        if not room.seed:
            room.seed = seed
        if now_ms < starts_ms and not room.drawn:
            score = draw_score(room.seed, user_id)
        else:
            room.late += 1
            score = LATE + room.late
        bisect.insort(room.line, (score, ticket_id))
        room.scores[ticket_id] = score
        room.users[user_id] = ticket_id
        room.tickets[ticket_id] = user_id
        room.joined += 1
        view = room.view(product_id, ticket_id, now_ms)
        assert view is not None
        return view, True

    async def ticket(self, product_id: ProductId, ticket_id: str, *, now_ms: int) -> Ticket | None:
        room = self._rooms.get(product_id)
        return None if room is None else room.view(product_id, ticket_id, now_ms)

    async def leave(self, product_id: ProductId, ticket_id: str, *, now_ms: int) -> Ticket | None:
        room = self._rooms.get(product_id)
        if room is None or ticket_id not in room.tickets:
            return None
        st = room.st.get(ticket_id)
        if st is None:
            room.st[ticket_id] = _LEFT
            room.left += 1
            room.left_waiting += 1
        elif isinstance(st, int):
            room.st[ticket_id] = _LEFT
            room.live.pop(ticket_id, None)
            room.left += 1
        return room.view(product_id, ticket_id, now_ms)

    async def advance(
        self, product_id: ProductId, terms: AdmissionTerms, ordered: Sequence[UserId] = ()
    ) -> QueueState:
        room = self._rooms.setdefault(product_id, _Room())
        now = terms.now_ms
        if now < terms.starts_ms:
            return room.state()
        room.drawn = True
        for user in ordered:
            ticket_id = room.users.get(user)
            if ticket_id is not None and isinstance(room.st.get(ticket_id), int):
                room.st[ticket_id] = _ORDERED
                room.live.pop(ticket_id, None)
                room.ordered += 1
        passed = [t for t, until in room.live.items() if until <= now]
        for ticket_id in passed:
            room.st[ticket_id] = _EXPIRED
            del room.live[ticket_id]
        room.expired += len(passed)
        room.sold_out = terms.available <= 0
        live = len(room.live)
        space = -(-terms.available // terms.units_per_turn) - live
        if terms.window is not None:
            space = min(space, terms.window - live)
        allowance = 0.0
        if terms.per_second is not None:
            at = terms.starts_ms if room.at is None else room.at
            allowance = room.allowance + max(0, now - at) * terms.per_second / 1000
            allowance = min(allowance, max(terms.per_second * terms.burst_ms / 1000, 1))
            space = min(space, math.floor(allowance))
            room.at = max(now, at)
        admitted = 0
        until = now + terms.token_ms
        while admitted < space and room.cursor < len(room.line):
            ticket_id = room.line[room.cursor][1]
            room.cursor += 1
            if ticket_id in room.st:
                room.left_waiting -= 1
            else:
                room.st[ticket_id] = until
                room.live[ticket_id] = until
                admitted += 1
        room.admitted += admitted
        if terms.per_second is not None:
            room.allowance = allowance - admitted
        return room.state()

    async def state(self, product_id: ProductId) -> QueueState | None:
        room = self._rooms.get(product_id)
        return None if room is None or not room.joined else room.state()
