"""A per-process cache of what an order is priced with: products and discount policies.

Prices, per-user limits and policies do not change through the API, so every request need
not read them from the database; a short time-to-live still picks up a change made by hand.
Stock is never taken from here: the gate and the guarded update decide that.

The sale window and the payment deadline are read from here too, so that the crowd before a
sale's start is refused without any I/O. An admin's change of them is forgotten at once by
the process that made it and reaches every other process within ``ttl`` (5 s by default).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from flashorder.application.expiring import ExpiringMap
from flashorder.domain.model import DiscountPolicy, DiscountPolicyId, Product, ProductId

ProductLoader = Callable[[Sequence[ProductId]], Awaitable[dict[ProductId, Product]]]
PolicyLoader = Callable[[DiscountPolicyId], Awaitable[DiscountPolicy | None]]


class CatalogueCache:
    """At most ``max_size`` products and as many policies, each for ``ttl``: only what exists
    is remembered, and a catalogue larger than the cache costs reads, not memory."""

    def __init__(
        self,
        *,
        ttl: float = 5.0,
        max_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._products: ExpiringMap[ProductId, Product] = ExpiringMap(max_size=max_size)
        self._policies: ExpiringMap[DiscountPolicyId, DiscountPolicy] = ExpiringMap(
            max_size=max_size
        )

    def __len__(self) -> int:
        return len(self._products) + len(self._policies)

    async def products(
        self, ids: Sequence[ProductId], load: ProductLoader
    ) -> dict[ProductId, Product]:
        """The products that exist among ``ids``. Unknown ones are not remembered, so a
        product created a moment later is found at once."""
        now = self._clock()
        found: dict[ProductId, Product] = {}
        missing: list[ProductId] = []
        for pid in ids:
            product = self._products.get(pid, now)
            if product is not None:
                found[pid] = product
            else:
                missing.append(pid)
        if missing:
            loaded = await load(missing)
            for pid, product in loaded.items():
                self._products.put(pid, product, expires_at=now + self._ttl, now=now)
            found.update(loaded)
        return found

    def cached_products(self, ids: Sequence[ProductId]) -> list[Product]:
        """The products among ``ids`` that this process holds now; never a read."""
        now = self._clock()
        return [p for pid in ids if (p := self._products.get(pid, now)) is not None]

    def forget(self, ids: Sequence[ProductId]) -> None:
        """Drop these products: they changed, here."""
        for pid in ids:
            self._products.discard(pid)

    async def policy(
        self, policy_id: DiscountPolicyId, load: PolicyLoader
    ) -> DiscountPolicy | None:
        now = self._clock()
        policy = self._policies.get(policy_id, now)
        if policy is not None:
            return policy
        policy = await load(policy_id)
        if policy is not None:
            self._policies.put(policy_id, policy, expires_at=now + self._ttl, now=now)
        return policy
