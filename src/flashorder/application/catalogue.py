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

from flashorder.domain.model import DiscountPolicy, DiscountPolicyId, Product, ProductId

ProductLoader = Callable[[Sequence[ProductId]], Awaitable[dict[ProductId, Product]]]
PolicyLoader = Callable[[DiscountPolicyId], Awaitable[DiscountPolicy | None]]


class CatalogueCache:
    def __init__(self, *, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._products: dict[ProductId, tuple[float, Product]] = {}
        self._policies: dict[DiscountPolicyId, tuple[float, DiscountPolicy]] = {}

    async def products(
        self, ids: Sequence[ProductId], load: ProductLoader
    ) -> dict[ProductId, Product]:
        """The products that exist among ``ids``. Unknown ones are not remembered, so a
        product created a moment later is found at once."""
        now = self._clock()
        found: dict[ProductId, Product] = {}
        missing: list[ProductId] = []
        for pid in ids:
            entry = self._products.get(pid)
            if entry is not None and entry[0] > now:
                found[pid] = entry[1]
            else:
                missing.append(pid)
        if missing:
            loaded = await load(missing)
            for pid, product in loaded.items():
                self._products[pid] = (now + self._ttl, product)
            found.update(loaded)
        return found

    def forget(self, ids: Sequence[ProductId]) -> None:
        """Drop these products: they changed, here."""
        for pid in ids:
            self._products.pop(pid, None)

    async def policy(
        self, policy_id: DiscountPolicyId, load: PolicyLoader
    ) -> DiscountPolicy | None:
        now = self._clock()
        entry = self._policies.get(policy_id)
        if entry is not None and entry[0] > now:
            return entry[1]
        policy = await load(policy_id)
        if policy is not None:
            self._policies[policy_id] = (now + self._ttl, policy)
        return policy
