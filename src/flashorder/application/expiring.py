"""A per-process map whose entries expire and whose size is bounded.

What a process remembers about ids that requests name (products, policies) must not grow
with the ids a client makes up: every entry has an expiry, and the map holds at most
``max_size`` of them. Entries are kept in the order they were stored, so the front holds
those that expire first: each store drops expired entries from there (each one once), and
the oldest live one when the map is full. A read is one dict lookup.
"""

from __future__ import annotations

from collections.abc import Hashable
from itertools import islice
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: How many front entries one store looks at: enough to keep up with what it adds.
_SWEEP = 8


class ExpiringMap(Generic[K, V]):
    def __init__(self, *, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("an expiring map holds at least one entry")
        self._max_size = max_size
        #: key -> (expires at, value). Every entry is stored with the same time-to-live by its
        #: owner, so insertion order is expiry order.
        self._entries: dict[K, tuple[float, V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K, now: float) -> V | None:
        """The value, or None when it is missing or expired."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            return None
        return entry[1]

    def put(self, key: K, value: V, *, expires_at: float, now: float) -> None:
        entries = self._entries
        entries.pop(key, None)
        entries[key] = (expires_at, value)
        for oldest in list(islice(entries, _SWEEP)):
            if entries[oldest][0] > now and len(entries) <= self._max_size:
                break
            del entries[oldest]

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)
