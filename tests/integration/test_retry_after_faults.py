"""A client retries an order whose answer it never got, with the same Idempotency-Key, after a
fault took the answer away (its worker died after the commit; Redis lost the cached answer).
By then the product may have sold out, or the per-user limit be reached, by that very order:
the answer is still the order, never a refusal. Found by the worker-kill drill.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from flashorder.adapters.idempotency.redis import RedisIdempotencyCache
from flashorder.adapters.locks.redis import RedisLocks
from flashorder.adapters.sql.engine import make_engine
from flashorder.adapters.sql.uow import SqlUnitOfWorkFactory
from flashorder.adapters.stock.redis import RedisStockGate
from flashorder.application import handlers
from flashorder.application.handlers import Deps
from flashorder.domain import commands, errors
from flashorder.domain.model import PaymentType, ProductId, UserId
from flashorder.domain.pricing import RequestedLine
from tests.contract.sql_support import migrated_database

pytestmark = pytest.mark.services

PRICE = 100


@dataclass
class Shop:
    deps: Deps
    redis: Redis
    prefix: str

    async def lose_redis_data(self) -> None:
        keys = [key async for key in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000)]
        if keys:
            await self.redis.delete(*keys)


@pytest.fixture(scope="module")
def database(mariadb_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with migrated_database(
        "mariadb", folder=tmp_path_factory.mktemp("retry"), mariadb_url=mariadb_url
    ) as url:
        yield url


@pytest.fixture
async def shop(database: str, redis_url: str) -> AsyncIterator[Shop]:
    engine = make_engine(database, pool_size=5)
    redis = Redis.from_pool(BlockingConnectionPool.from_url(redis_url, max_connections=20))
    prefix = f"rt-{secrets.token_hex(6)}"
    locks = RedisLocks(redis, prefix=prefix)
    deps = Deps(
        uow=SqlUnitOfWorkFactory(engine),
        stock=RedisStockGate(redis, prefix=prefix),
        locks=locks,
        idempotency=RedisIdempotencyCache(redis, prefix=prefix),
    )
    built = Shop(deps, redis, prefix)
    try:
        yield built
    finally:
        await built.lose_redis_data()
        await locks.close()
        await redis.aclose()
        await engine.dispose()


async def new_product(shop: Shop, *, stock: int, max_per_user: int | None = None) -> ProductId:
    pid = ProductId(f"PRD_{secrets.token_hex(6)}")
    await handlers.create_product(
        commands.CreateProduct(pid, "item", PRICE, stock=stock, max_per_user=max_per_user),
        deps=shop.deps,
    )
    return pid


def order(user: str, pid: ProductId, key: str, quantity: int = 1) -> commands.PlaceOrder:
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


async def test_a_retry_after_the_cached_answer_was_lost_gets_its_order_from_a_sold_out_product(
    shop: Shop,
) -> None:
    pid = await new_product(shop, stock=1)
    first = await handlers.place_order(order("alice", pid, "k1"), deps=shop.deps)
    await shop.lose_redis_data()

    retry = await handlers.place_order(order("alice", pid, "k1"), deps=shop.deps)

    assert (retry.replayed, retry.body["orderId"]) == (True, first.body["orderId"])
    again = await handlers.place_order(order("alice", pid, "k1"), deps=shop.deps)
    assert again.body["orderId"] == first.body["orderId"]


async def test_a_retry_after_the_cached_answer_was_lost_is_not_refused_by_its_own_limit(
    shop: Shop,
) -> None:
    pid = await new_product(shop, stock=10, max_per_user=1)
    first = await handlers.place_order(order("bob", pid, "k2"), deps=shop.deps)
    # Only the cached answer is lost (a worker died after the commit; the claim lapsed): the
    # gate still counts bob's unit, so the retry meets the per-user limit.
    await shop.redis.delete(*[k async for k in shop.redis.scan_iter(match=f"{shop.prefix}:idem*")])

    retry = await handlers.place_order(order("bob", pid, "k2"), deps=shop.deps)

    assert (retry.replayed, retry.body["orderId"]) == (True, first.body["orderId"])


async def test_a_new_request_refused_as_sold_out_stays_refused(shop: Shop) -> None:
    pid = await new_product(shop, stock=1)
    await handlers.place_order(order("carol", pid, "k3"), deps=shop.deps)

    with pytest.raises(errors.SoldOut):
        await handlers.place_order(order("dave", pid, "k4"), deps=shop.deps)
    with pytest.raises(errors.IdempotencyKeyReused):
        await handlers.place_order(order("carol", pid, "k3", quantity=2), deps=shop.deps)
