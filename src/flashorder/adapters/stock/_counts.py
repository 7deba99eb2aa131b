"""The count of a product, as both Redis stock gates keep it: one string key per product.

``prime``, ``put``, ``adjust`` and ``available`` of ``RedisStockGate`` and
``ShardedStockGate``: the gates differ only in the key (``_count_key``).
"""

from __future__ import annotations

from flashorder.adapters._redis.batch import BatchedScript, Client
from flashorder.adapters._redis.errors import translated
from flashorder.application.ports import StockUnknown
from flashorder.domain import errors
from flashorder.domain.model import ProductId

_UNKNOWN, _BELOW_ZERO = 1, 2


class RedisCounts:
    """Mixed into a gate that sets ``_client`` and ``_adjust`` (the ``_lua.ADJUST`` script)."""

    _client: Client
    _adjust: BatchedScript

    def _count_key(self, product_id: str) -> str:
        raise NotImplementedError

    async def prime(self, product_id: ProductId, available: int) -> bool:
        with translated():
            return bool(await self._client.set(self._count_key(product_id), available, nx=True))

    async def put(self, product_id: ProductId, available: int) -> None:
        with translated():
            await self._client.set(self._count_key(product_id), available)

    async def adjust(self, product_id: ProductId, delta: int) -> int:
        with translated():
            result = await self._adjust(keys=[self._count_key(product_id)], args=[delta])
        code = int(result[0])
        if code == _UNKNOWN:
            raise StockUnknown(product_id)
        if code == _BELOW_ZERO:
            # The gate knows no sold count; what it can report is how far it could go down.
            raise errors.StockBelowCommitted(product_id, committed=int(result[1]))
        return int(result[1])

    async def available(self, product_id: ProductId) -> int | None:
        with translated():
            value = await self._client.get(self._count_key(product_id))
        return None if value is None else int(value)
