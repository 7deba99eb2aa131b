"""The in-process twin of the Kafka topics, for tests that need a broker without Kafka.

The embedded mode does not use it: there the relay hands the outbox's events straight to
the read model (``DirectProjection``), with no broker in between.

One ordered log of encoded events (encoded so that a payload Kafka could not carry fails
here too) and, per consumer group, the committed offset. The behaviours the application
relies on are Kafka's, and the contract suite runs against both:

- at-least-once: a member starts at the group's committed offset, so whatever was fetched
  but not committed is fetched again by the next member of the group;
- a new member of a group takes over from the previous one (as if it had been assigned
  every partition): the old one fetches nothing more and its commits fail;
- order is the publish order (Kafka keeps only the order per aggregate, which this implies).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from flashorder.adapters.events.codec import decode_event, encode_event
from flashorder.domain import errors
from flashorder.domain.events import EVENT_TYPES, Event

DEFAULT_GROUP = "flashorder-projector"


class MemoryEventBus:
    """An ``EventPublisher``; ``consumer(group_id)`` gives the matching ``EventConsumer``s.

    Set ``down`` to make ``publish`` raise Unavailable, as Kafka would while unreachable.
    """

    def __init__(self) -> None:
        self._log: list[bytes] = []
        self._committed: dict[str, int] = {}
        self._members: dict[str, int] = {}
        # Replaced on every publish; waiters hold the old one, which is then set.
        self._appended = asyncio.Event()
        self.down = False

    async def publish(self, events: Sequence[Event]) -> None:
        if self.down:
            raise errors.Unavailable("kafka", "the in-memory bus is down")
        encoded = []
        for e in events:
            # Kafka has a topic per event type and creates no others.
            if e.type not in EVENT_TYPES:
                raise ValueError(f"no topic for event type {e.type!r}")
            encoded.append(encode_event(e))
        # All or nothing: nothing is appended until every event encoded.
        self._log.extend(encoded)
        appended, self._appended = self._appended, asyncio.Event()
        appended.set()

    def consumer(self, group_id: str = DEFAULT_GROUP) -> MemoryEventConsumer:
        member = self._members.get(group_id, 0) + 1
        self._members[group_id] = member
        return MemoryEventConsumer(self, group_id, member)

    def __len__(self) -> int:
        return len(self._log)


class MemoryEventConsumer:
    """A member of a consumer group of a ``MemoryEventBus``; see ``EventConsumer``."""

    def __init__(self, bus: MemoryEventBus, group_id: str, member: int) -> None:
        self._bus = bus
        self._member = member
        self.group_id = group_id
        self._position = bus._committed.get(group_id, 0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def _current(self) -> bool:
        return self._bus._members[self.group_id] == self._member

    async def fetch(self, max_events: int, timeout: float) -> list[Event]:
        if max_events < 1:
            raise ValueError("max_events must be positive")
        bus = self._bus
        if self._position >= len(bus._log) or not self._current():
            try:
                async with asyncio.timeout(timeout):
                    await bus._appended.wait()
            except TimeoutError:
                return []
        if not self._current():
            # Replaced by a newer member, like a Kafka member whose partitions were revoked.
            return []
        batch = bus._log[self._position : self._position + max_events]
        self._position += len(batch)
        return [decode_event(b) for b in batch]

    async def commit(self) -> None:
        if not self._current():
            raise errors.Unavailable("kafka", "a newer member of the group took over")
        self._bus._committed[self.group_id] = self._position

    async def lag(self) -> int:
        return len(self._bus._log) - self._bus._committed.get(self.group_id, 0)
