"""The StockGate contract, run against the Redis gate and its in-memory twin."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from flashorder.adapters.stock.memory import MemoryStockGate
from flashorder.adapters.stock.redis import RedisStockGate
from flashorder.adapters.stock.redis_cluster import ShardedStockGate
from flashorder.application.ports import ReservationLine, StockGate, StockUnknown
from flashorder.domain import errors
from flashorder.domain.model import OrderId, ProductId, UserId
from tests import redis_cluster
from tests.support.stock import drop_keys, line, order, product, redis_client, user

# --- reserving ----------------------------------------------------------------------------


async def test_reserving_takes_the_quantities_from_the_count(gate: StockGate) -> None:
    p = product()
    await gate.put(p, 10)

    await gate.reserve(order(), user(), [line(p, 3)])

    assert await gate.available(p) == 7


async def test_reserving_the_same_order_twice_takes_stock_once(gate: StockGate) -> None:
    p, o, u = product(), order(), user()
    await gate.put(p, 10)

    await gate.reserve(o, u, [line(p, 3)])
    await gate.reserve(o, u, [line(p, 3)])

    assert await gate.available(p) == 7


async def test_reserving_a_product_the_gate_has_no_count_for_raises_stock_unknown(
    gate: StockGate,
) -> None:
    p = product()

    with pytest.raises(StockUnknown) as raised:
        await gate.reserve(order(), user(), [line(p)])

    assert raised.value.product_id == p


async def test_reserving_more_than_is_left_raises_sold_out_and_takes_nothing(
    gate: StockGate,
) -> None:
    p = product()
    await gate.put(p, 2)

    with pytest.raises(errors.SoldOut) as raised:
        await gate.reserve(order(), user(), [line(p, 3)])

    assert raised.value.product_id == p
    assert await gate.available(p) == 2


async def test_a_multi_line_reservation_with_one_short_line_takes_nothing(
    gate: StockGate,
) -> None:
    a, b, c = product(), product(), product()
    await gate.put(a, 5)
    await gate.put(b, 1)
    await gate.put(c, 5)

    with pytest.raises(errors.SoldOut) as raised:
        await gate.reserve(order(), user(), [line(a, 2), line(b, 2), line(c, 2)])

    assert raised.value.product_id == b
    assert [await gate.available(p) for p in (a, b, c)] == [5, 1, 5]


async def test_a_multi_line_reservation_with_an_unknown_product_takes_nothing(
    gate: StockGate,
) -> None:
    a, unknown = product(), product()
    await gate.put(a, 5)

    with pytest.raises(StockUnknown):
        await gate.reserve(order(), user(), [line(a, 2), line(unknown, 1)])

    assert await gate.available(a) == 5


async def test_a_multi_line_reservation_takes_every_line(gate: StockGate) -> None:
    a, b = product(), product()
    await gate.put(a, 5)
    await gate.put(b, 5)

    await gate.reserve(order(), user(), [line(a, 2), line(b, 5)])

    assert [await gate.available(a), await gate.available(b)] == [3, 0]


async def test_lines_of_the_same_product_count_together(gate: StockGate) -> None:
    p, o = product(), order()
    await gate.put(p, 3)

    with pytest.raises(errors.SoldOut):
        await gate.reserve(order(), user(), [line(p, 2), line(p, 2)])
    await gate.put(p, 4)
    await gate.reserve(o, user(), [line(p, 2), line(p, 2)])
    assert await gate.available(p) == 0

    assert await gate.release(o)
    assert await gate.available(p) == 4


@pytest.mark.parametrize("lines", [[], [line(ProductId("p"), 0)], [line(ProductId("p"), -1)]])
async def test_a_reservation_needs_lines_with_positive_quantities(
    gate: StockGate, lines: list[ReservationLine]
) -> None:
    with pytest.raises(ValueError, match=r"line|positive"):
        await gate.reserve(order(), user(), lines)


async def test_reserving_past_the_per_user_limit_raises_limit_reached(gate: StockGate) -> None:
    p, u = product(), user()
    await gate.put(p, 10)
    await gate.reserve(order(), u, [line(p, 2, max_per_user=3)])

    with pytest.raises(errors.LimitReached) as raised:
        await gate.reserve(order(), u, [line(p, 2, max_per_user=3)])

    assert (raised.value.product_id, raised.value.limit) == (p, 3)
    assert await gate.available(p) == 8
    await gate.reserve(order(), user(), [line(p, 2, max_per_user=3)])
    assert await gate.available(p) == 6


# --- releasing and confirming -------------------------------------------------------------


async def test_releasing_gives_stock_and_the_user_count_back_once(gate: StockGate) -> None:
    p, o, u = product(), order(), user()
    await gate.put(p, 5)
    await gate.reserve(o, u, [line(p, 2, max_per_user=2)])

    assert await gate.release(o) is True
    assert await gate.release(o) is False

    assert await gate.available(p) == 5
    await gate.reserve(order(), u, [line(p, 2, max_per_user=2)])
    assert await gate.available(p) == 3


async def test_releasing_an_order_never_reserved_returns_false(gate: StockGate) -> None:
    assert await gate.release(order()) is False


async def test_reserving_a_released_order_again_takes_nothing(gate: StockGate) -> None:
    p, o, u = product(), order(), user()
    await gate.put(p, 5)
    await gate.reserve(o, u, [line(p, 2)])
    await gate.release(o)

    await gate.reserve(o, u, [line(p, 2)])

    assert await gate.available(p) == 5


async def test_a_confirmed_reservation_can_still_be_released_once(gate: StockGate) -> None:
    p, o = product(), order()
    await gate.put(p, 5)
    await gate.reserve(o, user(), [line(p, 2)])

    await gate.confirm(o)
    await gate.confirm(o)

    assert await gate.release(o) is True
    assert await gate.release(o) is False
    assert await gate.available(p) == 5


async def test_releasing_a_product_whose_count_was_lost_does_not_invent_one(
    gate: StockGate,
) -> None:
    p, q, o = product(), product(), order()
    await gate.put(p, 5)
    await gate.put(q, 5)
    await gate.reserve(o, user(), [line(p, 2), line(q, 1)])
    await _forget(gate, q)

    assert await gate.release(o) is True

    assert await gate.available(p) == 5
    assert await gate.available(q) is None


async def _forget(gate: StockGate, product_id: ProductId) -> None:
    # Simulates a lost counter (Redis restarted with partial data, or an operator's DEL).
    if isinstance(gate, RedisStockGate):
        await gate._client.delete(gate._avail(product_id))
    elif isinstance(gate, ShardedStockGate):
        await gate._client.delete(gate._p(product_id, "avail"))
    else:
        assert isinstance(gate, MemoryStockGate)
        del gate._available[product_id]


# --- pending reservations -------------------------------------------------------------------


async def test_pending_lists_reservations_older_than_the_age_oldest_first(
    gate: StockGate,
) -> None:
    p, first, second = product(), order(), order()
    await gate.put(p, 5)
    await gate.reserve(first, user(), [line(p)])
    # Ages far apart, so that a loaded machine's delay before the check cannot age the second.
    await asyncio.sleep(1.5)
    await gate.reserve(second, user(), [line(p)])

    assert await gate.pending(0.75) == [first]
    assert await gate.pending(0) == [first, second]
    assert await gate.pending(60) == []


async def test_confirmed_and_released_reservations_are_not_pending(gate: StockGate) -> None:
    p, confirmed, released, open_ = product(), order(), order(), order()
    await gate.put(p, 5)
    for o in (confirmed, released, open_):
        await gate.reserve(o, user(), [line(p)])

    await gate.confirm(confirmed)
    await gate.release(released)

    assert await gate.pending(0) == [open_]


async def test_many_reservations_are_confirmed_at_once_and_a_released_one_stays_released(
    gate: StockGate,
) -> None:
    p, released = product(), order()
    confirmed = [order() for _ in range(5)]
    open_ = order()
    await gate.put(p, 10)
    for o in (*confirmed, released, open_):
        await gate.reserve(o, user(), [line(p)])
    await gate.release(released)

    await gate.confirm(*confirmed, released)
    await gate.confirm()

    assert await gate.pending(0) == [open_]
    assert await gate.available(p) == 4  # 10 - 7 reserved + the released one, kept back
    assert await gate.release(released) is False
    assert await gate.release(confirmed[0]) is True  # confirmed still releases (a cancel)


# --- counts ---------------------------------------------------------------------------------


async def test_prime_sets_the_count_only_when_there_is_none(gate: StockGate) -> None:
    p = product()

    assert await gate.available(p) is None
    assert await gate.prime(p, 5) is True
    assert await gate.prime(p, 9) is False
    assert await gate.available(p) == 5


async def test_put_overwrites_the_count(gate: StockGate) -> None:
    p = product()
    await gate.prime(p, 5)

    await gate.put(p, 9)

    assert await gate.available(p) == 9


async def test_adjust_adds_a_delta_and_returns_the_new_count(gate: StockGate) -> None:
    p = product()
    await gate.put(p, 5)

    assert await gate.adjust(p, 3) == 8
    assert await gate.adjust(p, -8) == 0
    assert await gate.available(p) == 0


async def test_adjust_refuses_to_go_below_zero(gate: StockGate) -> None:
    p = product()
    await gate.put(p, 5)

    with pytest.raises(errors.StockBelowCommitted) as raised:
        await gate.adjust(p, -6)

    assert raised.value.product_id == p
    assert await gate.available(p) == 5


async def test_adjust_of_a_product_without_count_raises_stock_unknown(gate: StockGate) -> None:
    with pytest.raises(StockUnknown):
        await gate.adjust(product(), 1)


async def test_set_user_count_overwrites_what_the_limit_checks(gate: StockGate) -> None:
    p, u = product(), user()
    await gate.put(p, 10)

    await gate.set_user_count(p, u, 2)
    with pytest.raises(errors.LimitReached):
        await gate.reserve(order(), u, [line(p, 1, max_per_user=2)])
    await gate.set_user_count(p, u, 0)
    await gate.reserve(order(), u, [line(p, 2, max_per_user=2)])

    assert await gate.available(p) == 8


# --- races ----------------------------------------------------------------------------------


async def _outcome(gate: StockGate, o: OrderId, u: UserId, lines: list[ReservationLine]) -> str:
    try:
        await gate.reserve(o, u, lines)
    except errors.SoldOut:
        return "sold out"
    except errors.LimitReached:
        return "limit"
    return "ok"


async def test_500_concurrent_buyers_of_100_units_get_exactly_100(gate: StockGate) -> None:
    p = product()
    await gate.put(p, 100)

    outcomes = await asyncio.gather(
        *(_outcome(gate, order(), user(), [line(p)]) for _ in range(500))
    )

    assert outcomes.count("ok") == 100
    assert outcomes.count("sold out") == 400
    assert await gate.available(p) == 0


async def test_concurrent_two_product_orders_are_all_or_nothing(gate: StockGate) -> None:
    a, b = product(), product()
    await gate.put(a, 100)
    await gate.put(b, 60)

    outcomes = await asyncio.gather(
        *(_outcome(gate, order(), user(), [line(a), line(b)]) for _ in range(200))
    )

    assert outcomes.count("ok") == 60
    assert [await gate.available(a), await gate.available(b)] == [40, 0]


async def test_30_concurrent_orders_of_one_user_with_limit_2_take_exactly_2(
    gate: StockGate,
) -> None:
    p, u = product(), user()
    await gate.put(p, 100)

    outcomes = await asyncio.gather(
        *(_outcome(gate, order(), u, [line(p, 1, max_per_user=2)]) for _ in range(30))
    )

    assert outcomes.count("ok") == 2
    assert outcomes.count("limit") == 28
    assert await gate.available(p) == 98


async def test_50_concurrent_retries_of_one_order_take_stock_once(gate: StockGate) -> None:
    p, o, u = product(), order(), user()
    await gate.put(p, 10)

    await asyncio.gather(*(gate.reserve(o, u, [line(p, 3)]) for _ in range(50)))

    assert await gate.available(p) == 7


async def test_50_concurrent_releases_of_one_order_give_stock_back_once(
    gate: StockGate,
) -> None:
    p, o = product(), order()
    await gate.put(p, 10)
    await gate.reserve(o, user(), [line(p, 4)])

    released = await asyncio.gather(*(gate.release(o) for _ in range(50)))

    assert released.count(True) == 1
    assert await gate.available(p) == 10


async def test_a_storm_of_reserves_and_releases_keeps_the_count_exact(gate: StockGate) -> None:
    p = product()
    stock = 40
    await gate.put(p, stock)
    rng = random.Random()
    kept: list[OrderId] = []
    lowest = stock
    stop = asyncio.Event()

    async def buyer() -> None:
        o = order()
        if await _outcome(gate, o, user(), [line(p, rng.randint(1, 3))]) != "ok":
            return
        await asyncio.sleep(rng.random() * 0.01)
        if rng.random() < 0.5:
            await asyncio.gather(gate.release(o), gate.release(o))
        else:
            kept.append(o)

    async def watch() -> None:
        nonlocal lowest
        while not stop.is_set():
            lowest = min(lowest, await gate.available(p) or 0)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(buyer() for _ in range(400)))
    stop.set()
    await watcher

    assert lowest >= 0
    held = await gate.available(p)
    assert held is not None
    assert held >= 0
    for o in kept:
        assert await gate.release(o) is True
    assert await gate.available(p) == stock


# --- the Redis adapter itself -----------------------------------------------------------------


async def test_the_redis_gate_works_on_a_client_that_decodes_responses(redis_url: str) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    client = redis_client(redis_url, decode=True)
    try:
        gate = RedisStockGate(client, prefix=prefix)
        p, o = product(), order()
        await gate.put(p, 3)
        with pytest.raises(errors.LimitReached):
            await gate.reserve(order(), user(), [line(p, 2, max_per_user=1)])
        await gate.reserve(o, user(), [line(p, 2)])
        assert await gate.pending(0) == [o]
        assert await gate.release(o) is True
        assert await gate.available(p) == 3
    finally:
        await drop_keys(client, prefix)
        await client.aclose()


async def test_an_unreachable_redis_raises_unavailable() -> None:
    client = Redis(
        host="127.0.0.1",
        port=1,
        socket_connect_timeout=0.2,
        socket_timeout=0.2,
        retry=Retry(NoBackoff(), retries=0),
    )
    gate = RedisStockGate(client)
    p = product()
    try:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: gate.reserve(order(), user(), [line(p)]),
            lambda: gate.confirm(order()),
            lambda: gate.release(order()),
            lambda: gate.prime(p, 1),
            lambda: gate.put(p, 1),
            lambda: gate.adjust(p, 1),
            lambda: gate.available(p),
            lambda: gate.pending(1),
            lambda: gate.set_user_count(p, user(), 1),
        ]
        for call in calls:
            with pytest.raises(errors.Unavailable) as raised:
                await call()
            assert raised.value.dependency == "redis"
    finally:
        await client.aclose()


def _client(where: str, redis_url: str, request: pytest.FixtureRequest) -> Redis | RedisCluster:
    """A client of the suite's Redis, or of the cluster the test run starts (only when asked)."""
    if where == "cluster":
        return redis_cluster.client(request.getfixturevalue("redis_cluster_url"))
    return redis_client(redis_url)


@pytest.mark.parametrize("where", ["one redis", "cluster"])
async def test_a_sharded_reservation_cut_short_half_way_is_found_and_given_back_whole(
    where: str, redis_url: str, request: pytest.FixtureRequest
) -> None:
    # The process dies after the ledger entry and one product's take, before the other's.
    client = _client(where, redis_url, request)
    prefix = f"test-{uuid.uuid4().hex}"
    gate = ShardedStockGate(client, prefix=prefix)
    a, b, o, u = product(), product(), order(), user()
    await gate.put(a, 10)
    await gate.put(b, 10)
    try:
        await gate._begin(keys=gate._order(o), args=[o, u, 60, a, 3, b, 4])
        await gate._take(keys=gate._line(a, o), args=[o, u, 3, -1, 60])
        assert [await gate.available(a), await gate.available(b)] == [7, 10]

        assert await gate.pending(0) == [o]
        assert await gate.release(o) is True

        assert [await gate.available(a), await gate.available(b)] == [10, 10]
        assert await gate.pending(0) == []
        # A take of the dead process still on its way finds the line released: it takes nothing.
        await gate._take(keys=gate._line(b, o), args=[o, u, 4, -1, 60])
        assert await gate.available(b) == 10
        assert await gate.release(o) is False
    finally:
        await drop_keys(client, prefix)
        await client.aclose()


@pytest.mark.parametrize("where", ["one redis", "cluster"])
async def test_a_line_whose_ledger_entry_a_failover_lost_is_given_back_by_correct(
    where: str, redis_url: str, request: pytest.FixtureRequest
) -> None:
    # The ledger's master acknowledged the entry and died before its replica had it; the
    # product's master kept the line. Before: the line stayed in flight for good (held out
    # of the count: an undersell nothing repaired).
    client = _client(where, redis_url, request)
    prefix = f"test-{uuid.uuid4().hex}"
    gate = ShardedStockGate(client, prefix=prefix, orphan_after=0)
    young = ShardedStockGate(client, prefix=prefix, orphan_after=3600)
    p, lost, kept, u = product(), order(), order(), user()
    await gate.put(p, 10)
    try:
        await gate.reserve(lost, u, [line(p, 2)])
        await gate.reserve(kept, user(), [line(p, 3)])
        entry, pending = gate._order(lost)
        await client.delete(entry)
        await client.zrem(pending, lost)
        assert (await gate.view(p)).in_flight == {lost: 2, kept: 3}

        # Taken too recently: a request could still be on its way with it. Nothing changes.
        await young.correct(p, available=10, committed=[])
        assert (await gate.view(p)).in_flight == {lost: 2, kept: 3}

        fixed = await gate.correct(p, available=10, committed=[])

        # The orphan is given back; the line of an order with its entry stays in flight.
        assert (await gate.view(p)).in_flight == {kept: 3}
        assert (fixed.in_flight, fixed.after, await gate.available(p)) == (3, 7, 7)
        # Given back as released: a late take of that order takes nothing.
        await gate._take(keys=gate._line(p, lost), args=[lost, u, 2, -1, 60])
        assert await gate.available(p) == 7
    finally:
        await drop_keys(client, prefix)
        await client.aclose()
