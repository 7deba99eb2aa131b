"""Once a product is sold out, its orders are refused at once, and stop being refused as soon
as stock comes back (in every API process within the sold-out cache's time-to-live)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from flashorder.application import handlers
from flashorder.application.placement import ReservePlacement
from flashorder.application.ports import StockGate, UnitOfWork, UnitOfWorkFactory
from flashorder.application.sold_out import SoldOutCache
from flashorder.domain import commands
from flashorder.domain.model import ProductId
from tests.invariants import check_stock
from tests.support.api import Api, InProcessApi, embedded
from tests.support.calls import admin, new_product, place, rid
from tests.support.deps import reserving

PROBLEM = "urn:flashorder:problem:"


class CountingGate:
    """A stock gate that counts the calls it forwards, by method."""

    def __init__(self, inner: StockGate) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.inner, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await method(*args, **kwargs)

        return counted


class CountingUow:
    """A unit-of-work factory that counts the transactions it opens."""

    def __init__(self, inner: UnitOfWorkFactory) -> None:
        self.inner = inner
        self.opened = 0

    def __call__(self) -> UnitOfWork:
        self.opened += 1
        return self.inner()


@asynccontextmanager
async def counted(
    api: InProcessApi, *, ttl: float
) -> AsyncIterator[tuple[CountingGate, CountingUow]]:
    """The service's command side on a counting gate and unit of work, for the block."""
    deps = api.service.deps
    gate, uow = CountingGate(deps.stock), CountingUow(deps.uow)
    # It forwards every method of the gate it wraps, so it is one.
    as_gate = cast("StockGate", gate)
    async with reserving(
        uow=uow,
        stock=as_gate,
        locks=deps.locks,
        idempotency=deps.idempotency,
        batching=True,
        sold_out=SoldOutCache(as_gate, ttl=ttl),
    ) as counting:
        api.service.deps = counting
        try:
            yield gate, uow
        finally:
            api.service.deps = deps


async def test_orders_of_a_sold_out_product_are_refused_without_touching_gate_or_database(
    tmp_path: Path,
) -> None:
    async with embedded(tmp_path) as api:
        pid = await new_product(api, stock=2)
        async with counted(api, ttl=30) as (gate, uow):
            assert [(await place(api, rid("u"), (pid, 1, 10050))).status for _ in range(3)] == [
                201,
                201,
                409,
            ]
            # The third order met the empty gate; the next one reads the count once.
            gate.calls.clear()
            uow.opened = 0

            replies = [await place(api, rid("u"), (pid, 1, 10050)) for _ in range(20)]

            assert {r.status for r in replies} == {409}
            assert {r.body["type"] for r in replies} == {PROBLEM + "sold-out"}
            assert {r.body["productId"] for r in replies} == {pid}
            assert gate.calls["reserve"] == 0
            assert gate.calls["available"] <= 1
            assert uow.opened == 0
            # A keyed request still skips the gate; its refusal pays one read of the key's
            # durable record (a retry of an order placed before the sell-out gets that order).
            keyed = await place(api, rid("u"), (pid, 1, 10050), key=rid("k"))
            assert keyed.status == 409
            assert gate.calls["reserve"] == 0
            assert uow.opened == 1
            await check_stock(api.engine, gate.inner, [pid])


async def test_added_stock_and_cancelled_orders_are_sold_again_at_once(tmp_path: Path) -> None:
    async with embedded(tmp_path) as api:
        pid = await new_product(api, stock=1)
        async with counted(api, ttl=30):
            buyer = rid("u")
            first = await place(api, buyer, (pid, 1, 10050))
            assert (await place(api, rid("u"), (pid, 1, 10050))).status == 409

            reply = await api.call(
                "POST", f"/api/v1/products/{pid}/stock", {"add": 1}, token=admin(api)
            )
            assert reply.status == 200
            assert (await place(api, rid("u"), (pid, 1, 10050))).status == 201
            assert (await place(api, rid("u"), (pid, 1, 10050))).status == 409

            reply = await api.call(
                "POST", f"/api/v1/orders/{first.body['orderId']}/cancel", token=api.token(buyer)
            )
            assert reply.status == 200
            assert (await place(api, rid("u"), (pid, 1, 10050))).status == 201
            await check_stock(api.engine, api.gate, [pid])


async def test_stock_added_by_another_process_is_sold_within_the_ttl(tmp_path: Path) -> None:
    ttl = 1.0
    async with embedded(tmp_path, sold_out_cache_seconds=ttl) as api:
        pid = await new_product(api, stock=1)
        assert (await place(api, rid("u"), (pid, 1, 10050))).status == 201
        assert (await place(api, rid("u"), (pid, 1, 10050))).status == 409
        assert (await place(api, rid("u"), (pid, 1, 10050))).status == 409

        # Another process restocks: this one's cache is not told.
        deps = api.service.deps
        async with reserving(
            uow=deps.uow, stock=deps.stock, locks=deps.locks, idempotency=deps.idempotency
        ) as elsewhere:
            await handlers.change_stock(commands.ChangeStock(ProductId(pid), add=1), deps=elsewhere)
        restocked = time.monotonic()
        refusals = 0
        while (status := (await place(api, rid("u"), (pid, 1, 10050))).status) == 409:
            refusals += 1
            await asyncio.sleep(0.02)

        assert status == 201
        assert refusals > 0  # the cache did refuse, for a while
        # Within the TTL, with a slack as long again for a loaded machine.
        assert time.monotonic() - restocked <= 2 * ttl
        await check_stock(api.engine, api.gate, [pid])


async def test_every_api_process_sells_restocked_units_after_a_sell_out(api: Api) -> None:
    pid = await new_product(api, stock=3)
    replies = await asyncio.gather(*(place(api, rid("u"), (pid, 1, 10050)) for _ in range(30)))
    assert Counter(r.status for r in replies) == {201: 3, 409: 27}

    reply = await api.call("POST", f"/api/v1/products/{pid}/stock", {"add": 2}, token=admin(api))
    assert reply.status == 200
    # Each request may land on any worker. A worker may still refuse on a reading taken
    # before the restock, but not once that reading is older than its time-to-live.
    stale_until = time.monotonic() + api.settings.sold_out_cache_seconds + 1.0
    taken = 0
    while taken < 2:
        started = time.monotonic()
        reply = await place(api, rid("u"), (pid, 1, 10050))
        assert reply.status in (201, 409), reply.body
        assert reply.status == 201 or started < stale_until, "refused after the TTL"
        taken += reply.status == 201
    assert (await place(api, rid("u"), (pid, 1, 10050))).status == 409
    figures = await check_stock(api.engine, api.gate, [pid])
    assert figures[pid] == {"stock": 5, "available": 0, "sold": 5}


async def test_the_sold_out_cache_stays_bounded_under_a_flood_of_made_up_product_ids(
    tmp_path: Path,
) -> None:
    limits_off = {"rate_user_per_second": 0, "rate_ip_per_second": 0}
    async with embedded(tmp_path, sold_out_cache_size=100, **limits_off) as api:
        placement = api.service.deps.placement
        assert isinstance(placement, ReservePlacement)
        sold_out, catalogue = placement.sold_out, api.service.deps.catalogue
        assert sold_out is not None
        sizes = []
        for n in range(1_500):
            pid = f"PRD_{240701120000001 + n}_{n % 9999:04d}_101"
            reply = await place(api, rid("u"), (pid, 1, 10050))
            assert reply.status == 422, reply.body
            if n % 100 == 99:
                sizes.append(len(sold_out))

        # Flat: at most its size from the first hundred ids on, never growing with the flood.
        assert max(sizes) <= 100, sizes
        # Unknown products are never remembered by the catalogue cache.
        assert len(catalogue) == 0
