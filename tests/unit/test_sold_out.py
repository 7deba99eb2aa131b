"""The sold-out cache: what a process may refuse without asking the gate, and for how long."""

from __future__ import annotations

import asyncio

import pytest

from flashorder.adapters.stock.memory import MemoryStockGate
from flashorder.application.sold_out import SoldOutCache
from flashorder.domain import errors
from flashorder.domain.model import ProductId

P, Q = ProductId("P"), ProductId("Q")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingGate(MemoryStockGate):
    """The in-memory gate, counting reads and able to hold them or fail them."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.hold: asyncio.Event | None = None
        self.down = False

    async def available(self, product_id: ProductId) -> int | None:
        self.reads += 1
        if self.down:
            raise errors.Unavailable("redis", "down")
        count = await super().available(product_id)
        if self.hold is not None:
            await self.hold.wait()
        return count


@pytest.fixture
def gate() -> CountingGate:
    return CountingGate()


async def test_a_product_with_no_stock_left_is_refused_from_memory_within_the_ttl(
    gate: CountingGate,
) -> None:
    clock = Clock()
    cache = SoldOutCache(gate, ttl=0.1, clock=clock)
    await gate.put(P, 0)

    assert await cache.first_sold_out([P]) == P
    clock.now += 0.09
    assert await cache.first_sold_out([P]) == P

    assert gate.reads == 1


async def test_after_the_ttl_the_count_is_read_again(gate: CountingGate) -> None:
    clock = Clock()
    cache = SoldOutCache(gate, ttl=0.1, clock=clock)
    await gate.put(P, 0)
    assert await cache.first_sold_out([P]) == P

    await gate.adjust(P, 3)  # another process restocks
    clock.now += 0.11

    assert await cache.first_sold_out([P]) is None
    assert gate.reads == 2


async def test_a_product_with_stock_or_no_count_is_never_refused(gate: CountingGate) -> None:
    cache = SoldOutCache(gate, ttl=10, clock=Clock())
    await gate.put(P, 1)

    assert await cache.first_sold_out([P, Q]) is None


async def test_a_negative_count_is_sold_out(gate: CountingGate) -> None:
    cache = SoldOutCache(gate, ttl=10, clock=Clock())
    await gate.put(P, 1)
    await gate.put(Q, -2)

    assert await cache.first_sold_out([P, Q]) == Q


async def test_forgetting_a_product_reads_it_again_at_once(gate: CountingGate) -> None:
    cache = SoldOutCache(gate, ttl=10, clock=Clock())
    await gate.put(P, 0)
    assert await cache.first_sold_out([P]) == P

    await gate.adjust(P, 1)
    cache.forget([P])

    assert await cache.first_sold_out([P]) is None


async def test_a_crowd_arriving_together_shares_one_read(gate: CountingGate) -> None:
    cache = SoldOutCache(gate, ttl=10, clock=Clock())
    await gate.put(P, 0)
    gate.hold = asyncio.Event()

    crowd = [asyncio.create_task(cache.first_sold_out([P])) for _ in range(100)]
    await asyncio.sleep(0)
    gate.hold.set()

    assert set(await asyncio.gather(*crowd)) == {P}
    assert gate.reads == 1


async def test_a_read_that_started_before_a_change_here_is_not_kept(gate: CountingGate) -> None:
    cache = SoldOutCache(gate, ttl=10, clock=Clock())
    await gate.put(P, 0)
    gate.hold = asyncio.Event()
    early = asyncio.create_task(cache.first_sold_out([P]))
    await asyncio.sleep(0)

    await gate.adjust(P, 1)
    cache.forget([P])
    gate.hold.set()
    await early
    gate.hold = None

    assert await cache.first_sold_out([P]) is None


async def test_when_the_gate_cannot_be_read_nothing_is_refused(gate: CountingGate) -> None:
    cache = SoldOutCache(gate, ttl=10, clock=Clock())
    await gate.put(P, 0)
    gate.down = True

    assert await cache.first_sold_out([P]) is None
    gate.down = False
    assert await cache.first_sold_out([P]) == P


async def test_a_ttl_of_zero_turns_it_off(gate: CountingGate) -> None:
    cache = SoldOutCache(gate, ttl=0, clock=Clock())
    await gate.put(P, 0)

    assert await cache.first_sold_out([P]) is None
    assert gate.reads == 0


async def test_a_cancelled_request_does_not_cancel_the_read_others_wait_for(
    gate: CountingGate,
) -> None:
    cache = SoldOutCache(gate, ttl=10, clock=Clock())
    await gate.put(P, 0)
    gate.hold = asyncio.Event()
    first = asyncio.create_task(cache.first_sold_out([P]))
    second = asyncio.create_task(cache.first_sold_out([P]))
    await asyncio.sleep(0)

    first.cancel()
    gate.hold.set()

    assert await second == P
    with pytest.raises(asyncio.CancelledError):
        await first
