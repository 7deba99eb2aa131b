"""A client retries an order whose answer it never got, with the same Idempotency-Key, after a
fault took the answer away (its worker died after the commit; Redis lost the cached answer).
By then the product may have sold out, or the per-user limit be reached, by that very order:
the answer is still the order, never a refusal. Found by the worker-kill drill.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from flashorder.application import handlers
from flashorder.domain import errors
from tests.support.command_side import CommandSide, command_side, order

pytestmark = pytest.mark.services


@pytest.fixture
async def shop(mariadb_database: str, redis_url: str) -> AsyncIterator[CommandSide]:
    async with command_side(
        mariadb_database, redis_url, prefix=f"rt-{secrets.token_hex(6)}", connections=20
    ) as side:
        yield side


async def test_a_retry_after_the_cached_answer_was_lost_gets_its_order_from_a_sold_out_product(
    shop: CommandSide,
) -> None:
    pid = await shop.new_product(stock=1)
    first = await handlers.place_order(order("alice", pid, key="k1"), deps=shop.deps)
    await shop.lose_redis_data()

    retry = await handlers.place_order(order("alice", pid, key="k1"), deps=shop.deps)

    assert (retry.replayed, retry.body["orderId"]) == (True, first.body["orderId"])
    again = await handlers.place_order(order("alice", pid, key="k1"), deps=shop.deps)
    assert again.body["orderId"] == first.body["orderId"]


async def test_a_retry_after_the_cached_answer_was_lost_is_not_refused_by_its_own_limit(
    shop: CommandSide,
) -> None:
    pid = await shop.new_product(stock=10, max_per_user=1)
    first = await handlers.place_order(order("bob", pid, key="k2"), deps=shop.deps)
    # Only the cached answer is lost (a worker died after the commit; the claim lapsed): the
    # gate still counts bob's unit, so the retry meets the per-user limit.
    await shop.redis.delete(*[k async for k in shop.redis.scan_iter(match=f"{shop.prefix}:idem*")])

    retry = await handlers.place_order(order("bob", pid, key="k2"), deps=shop.deps)

    assert (retry.replayed, retry.body["orderId"]) == (True, first.body["orderId"])


async def test_a_new_request_refused_as_sold_out_stays_refused(shop: CommandSide) -> None:
    pid = await shop.new_product(stock=1)
    await handlers.place_order(order("carol", pid, key="k3"), deps=shop.deps)

    with pytest.raises(errors.SoldOut):
        await handlers.place_order(order("dave", pid, key="k4"), deps=shop.deps)
    with pytest.raises(errors.IdempotencyKeyReused):
        await handlers.place_order(order("carol", pid, 2, key="k3"), deps=shop.deps)
