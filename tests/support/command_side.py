"""The command side on real services, called without HTTP: the handlers with the MariaDB unit of
work and the Redis gate, locks and idempotency cache, every Redis key under a test's prefix."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.idempotency.redis import RedisIdempotencyCache
from flashorder.adapters.locks.redis import RedisLocks
from flashorder.adapters.sql.engine import make_engine
from flashorder.adapters.sql.uow import SqlUnitOfWorkFactory
from flashorder.adapters.stock.redis import RedisStockGate
from flashorder.application import handlers
from flashorder.application.handlers import Deps
from flashorder.domain import commands
from flashorder.domain.model import PaymentType, ProductId, UserId
from flashorder.domain.pricing import RequestedLine
from tests.support.deps import reserving

#: The unit price of every product these tests create.
PRICE = 100


@dataclass
class CommandSide:
    engine: AsyncEngine
    redis: Redis
    prefix: str
    gate: RedisStockGate
    deps: Deps

    async def new_product(self, *, stock: int, max_per_user: int | None = None) -> ProductId:
        pid = ProductId(f"PRD_{secrets.token_hex(6)}")
        await handlers.create_product(
            commands.CreateProduct(pid, "item", PRICE, stock=stock, max_per_user=max_per_user),
            deps=self.deps,
        )
        return pid

    async def lose_redis_data(self) -> None:
        """What a Redis restart without persistence does, to this test's keys only."""
        keys = [key async for key in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000)]
        if keys:
            await self.redis.delete(*keys)


def order(
    user: str, pid: ProductId, quantity: int = 1, *, key: str | None = None
) -> commands.PlaceOrder:
    """An order of ``quantity`` units of ``pid`` at ``PRICE``, paid by card."""
    return commands.PlaceOrder(
        user_id=UserId(user),
        lines=(RequestedLine(pid, quantity, PRICE),),
        discount_policy_id=None,
        discount_amount=None,
        delivery_fee=0,
        payment_amount=PRICE * quantity,
        payment_type=PaymentType.CREDIT,
        idempotency_key=key,
    )


@asynccontextmanager
async def command_side(
    database: str, redis_url: str, *, prefix: str, connections: int
) -> AsyncIterator[CommandSide]:
    """The command side on ``database`` and ``redis_url``, with ``connections`` to each; its
    Redis keys are deleted on the way out."""
    engine = make_engine(database, pool_size=connections)
    redis = Redis.from_pool(
        BlockingConnectionPool.from_url(redis_url, max_connections=connections, timeout=10)
    )
    gate = RedisStockGate(redis, prefix=prefix)
    locks = RedisLocks(redis, prefix=prefix)
    side: CommandSide | None = None
    try:
        async with reserving(
            uow=SqlUnitOfWorkFactory(engine),
            stock=gate,
            locks=locks,
            idempotency=RedisIdempotencyCache(redis, prefix=prefix),
        ) as deps:
            side = CommandSide(engine, redis, prefix, gate, deps)
            yield side
    finally:
        if side is not None:
            await side.lose_redis_data()
        await locks.close()
        await redis.aclose()
        await engine.dispose()
