"""The sale page's aggregation: one sampler per process, frames shared by every viewer."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping

import orjson
import pytest

from flashorder.application.ports import OrderCallsSample, OutboxState, ProductSale
from flashorder.application.sale_watch import SaleWatch, quantile, refusal_slots
from flashorder.domain.model import ProductId

HOT = ProductId("PRD_HOT")
OTHER = ProductId("PRD_OTHER")


class FakeFigures:
    """A sale in memory; counts the reads, which is what the sale page must keep low."""

    def __init__(self) -> None:
        self.available = {HOT: 10, OTHER: 5}
        self.orders: dict[ProductId, dict[str, int]] = {HOT: {}, OTHER: {"PAID": 2}}
        self.reads = 0

    async def products(
        self, product_ids: Collection[ProductId], *, newest: int = 0
    ) -> list[ProductSale]:
        self.reads += 1
        wanted = set(product_ids) | (set(list(self.available)[:newest]) if newest else set())
        return [
            ProductSale(p, f"name of {p}", 10, self.available[p], dict(self.orders[p]))
            for p in self.available
            if p in wanted
        ]

    async def orders_by_status(self) -> Mapping[str, int]:
        return {}

    async def outbox(self) -> OutboxState:
        return OutboxState(0, None)


class FakeCalls:
    def __init__(self) -> None:
        self.outcomes: dict[str, float] = {}
        self.buckets: list[tuple[float, float]] = [(0.01, 0), (0.1, 0), (float("inf"), 0)]

    def __call__(self) -> OrderCallsSample:
        return OrderCallsSample(dict(self.outcomes), list(self.buckets))


async def no_lag() -> Mapping[str, float]:
    return {"events": 0, "seconds": 0.0}


def make_watch(figures: FakeFigures, calls: FakeCalls, **kwargs: float) -> SaleWatch:
    return SaleWatch(figures, calls, no_lag, every=kwargs.get("every", 0.05))


async def test_a_dozen_viewers_share_one_sampler() -> None:
    figures, calls = FakeFigures(), FakeCalls()
    watch = make_watch(figures, calls)
    frames: list[list[bytes]] = [[] for _ in range(12)]

    async def view(i: int) -> None:
        async with watch.watch(HOT) as viewer:
            while len(frames[i]) < 3:
                frame = await viewer.next()
                assert frame is not None
                frames[i].append(frame)

    async with asyncio.timeout(5):
        await asyncio.gather(*(view(i) for i in range(12)))
    # Twelve viewers, three frames each: still about three reads, not thirty-six.
    assert figures.reads <= 5
    assert watch.samples == figures.reads
    first = orjson.loads(frames[0][0])
    assert first["product"]["productId"] == HOT
    assert first["product"]["available"] == 10


async def test_sampler_runs_only_while_someone_watches() -> None:
    figures, calls = FakeFigures(), FakeCalls()
    watch = make_watch(figures, calls)
    await asyncio.sleep(0.15)
    assert figures.reads == 0
    assert not watch.running
    async with watch.watch(None) as viewer:
        assert watch.running
        await viewer.next()
    assert not watch.running
    reads = figures.reads
    await asyncio.sleep(0.15)
    assert figures.reads == reads


async def test_frames_show_sales_rates_and_refusals_as_they_move() -> None:
    figures, calls = FakeFigures(), FakeCalls()
    watch = make_watch(figures, calls, every=0.1)
    async with watch.watch(HOT) as viewer:
        before = orjson.loads(await viewer.next() or b"null")
        figures.available[HOT] = 4
        figures.orders[HOT] = {"CREATED": 5, "PAID": 1}
        calls.outcomes = {"ok": 6, "sold-out": 3, "validation-error": 1, "sale-not-started": 2}
        calls.buckets = [(0.01, 5), (0.1, 6), (float("inf"), 6)]
        after = orjson.loads(await viewer.next() or b"null")
    assert before["product"]["sold"] == 0
    product = after["product"]
    assert product["sold"] == 6
    assert product["available"] == 4
    # Slots that lifecycle states fill exist from the start.
    assert product["orders"] == {"CREATED": 5, "PAID": 1, "EXPIRED": 0, "CANCELLED": 0}
    assert product["ordersPerSecond"] > 0
    refusals = after["orderCalls"]["refusals"]
    assert refusals["sold-out"] == 3
    assert refusals["sale-not-started"] == 2
    assert refusals["invalid"] == 1
    assert after["orderCalls"]["acceptedPerSecond"] > 0
    assert after["orderCalls"]["latencyMs"]["p50"] is not None


async def test_overview_lists_products_and_a_new_viewer_gets_the_history() -> None:
    figures, calls = FakeFigures(), FakeCalls()
    watch = make_watch(figures, calls)
    async with watch.watch(None) as first:
        await first.next()
        await first.next()
        async with watch.watch(HOT) as late:
            history = orjson.loads(late.history())
    assert len(history) >= 2
    assert all("product" in frame for frame in history)
    overview = watch.history[-1].body(None)
    assert {p["productId"] for p in overview["products"]} == {HOT, OTHER}


async def test_close_ends_every_stream() -> None:
    watch = make_watch(FakeFigures(), FakeCalls())
    async with watch.watch(HOT) as viewer:
        await viewer.next()
        await watch.close()
        assert await viewer.next() is None


async def test_a_failing_database_shows_as_an_error_frame() -> None:
    class Down(FakeFigures):
        async def products(
            self, product_ids: Collection[ProductId], *, newest: int = 0
        ) -> list[ProductSale]:
            raise ConnectionError("down")

    watch = make_watch(Down(), FakeCalls())
    async with watch.watch(HOT) as viewer:
        frame = orjson.loads(await viewer.next() or b"null")
    assert frame["error"] == "ConnectionError"


def test_refusals_are_grouped_by_what_operators_tell_apart() -> None:
    slots = refusal_slots(
        {"ok": 9, "sold-out": 2, "price-mismatch": 1, "validation-error": 1, "unavailable": 4}
    )
    assert slots == {
        "sold-out": 2,
        "limit-reached": 0,
        "too-many-requests": 0,
        "sale-not-started": 0,
        "invalid": 2,
        "other": 4,
    }


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.5, 0.01 * 5 / 8), (0.9, 0.01 + 0.09 * 0.5), (1.0, 0.1)],
)
def test_quantile_interpolates_inside_its_bucket(q: float, expected: float) -> None:
    buckets = [(0.01, 8.0), (0.1, 10.0), (float("inf"), 10.0)]
    assert quantile(q, buckets) == pytest.approx(expected)


def test_quantile_of_nothing_is_none_and_of_the_open_bucket_its_lower_bound() -> None:
    assert quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert quantile(0.99, [(0.1, 1.0), (float("inf"), 10.0)]) == 0.1


async def test_a_queued_product_shows_its_queue_and_another_none() -> None:
    stats: dict[ProductId, dict[str, object]] = {
        HOT: {"waiting": 1200, "admitted": 0, "seed": "9f3a", "drawAt": "…"}
    }
    asked: list[ProductId] = []

    async def queue(product_id: ProductId) -> Mapping[str, object] | None:
        asked.append(product_id)
        return stats.get(product_id)

    watch = SaleWatch(FakeFigures(), FakeCalls(), no_lag, queue=queue, every=0.05)
    async with watch.watch(HOT) as hot, watch.watch(OTHER) as other, watch.watch(None) as overview:
        hot_frame = orjson.loads(await hot.next() or b"null")
        other_frame = orjson.loads(await other.next() or b"null")
        listed = orjson.loads(await overview.next() or b"null")
        stats[HOT] = {**stats[HOT], "waiting": 900, "admitted": 300}
        moved = orjson.loads(await hot.next() or b"null")
    assert hot_frame["product"]["queue"]["waiting"] == 1200
    assert hot_frame["product"]["queue"]["seed"] == "9f3a"
    assert moved["product"]["queue"]["waiting"] == 900
    # Admissions per second from the change between two samples, whoever admitted them.
    assert hot_frame["product"]["queue"]["admissionsPerSecond"] == 0
    assert moved["product"]["queue"]["admissionsPerSecond"] > 0
    assert other_frame["product"]["queue"] is None
    # The overview asks no queue of its own: only the watched products' are read.
    assert set(asked) == {HOT, OTHER}
    assert "products" in listed
