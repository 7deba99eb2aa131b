"""The live sale page's aggregation: one sampler per process, however many people watch.

While at least one viewer is connected, a background task reads the sale's figures once per
``every`` seconds (the products from the write model, the order call's counters from the
metrics of every API process, the read model's lag) and publishes one frame. Each viewer
waits for the next frame and sends it: the database sees one read per process per second
whether one page is open or fifty, and nothing at all when none is. A slow viewer skips
frames instead of queueing them. The last viewer to leave stops the sampler.

A frame is JSON, built once per tick and per product (every viewer of a product sends the
same bytes)::

    {"at": 1733130000.0, "product": {...} | "products": [...],
     "orderCalls": {"acceptedPerSecond", "refusedPerSecond", "refusals": {...},
                    "refusalsByType": {...}, "latencyMs": {"p50", "p90", "p99"}},
     "lag": {"events", "seconds"}}

A watched product (not the overview's) also carries ``"queue"``: its waiting room's figures
(the queue's length, the admission rate asked and measured, the draw's seed and time) as
the waiting room reports them, plus ``admissionsPerSecond``, the change of its admissions
between two samples (the room's own measure covers only the steps its process ran), or
null when the product is not queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from flashorder.application.ports import OrderCallsSample, ProductSale, SaleFigures
from flashorder.domain.model import ProductId

log = logging.getLogger(__name__)

#: The refusals a sale's operators tell apart, by problem type; every other problem type of
#: the order call counts as ``invalid`` (the request was wrong) or ``other``.
REFUSAL_SLOTS = ("sold-out", "limit-reached", "too-many-requests", "sale-not-started")
INVALID_TYPES = frozenset(
    {
        "validation-error",
        "invalid-request",
        "price-mismatch",
        "discount-not-applicable",
        "unknown-reference",
        "idempotency-key-reused",
        "payload-too-large",
        "unsupported-media-type",
        "bad-request",
    }
)
#: The order statuses the page shows even before any order reaches them.
STATUS_SLOTS = ("CREATED", "PAID", "EXPIRED", "CANCELLED")
#: Seconds of calls over which the latency percentiles are computed.
LATENCY_WINDOW = 5.0

#: A product's waiting-room figures as JSON (None: the product is not queued).
QueueFigures = Callable[[ProductId], Coroutine[Any, Any, Mapping[str, Any] | None]]


async def _no_queue(product_id: ProductId) -> Mapping[str, Any] | None:
    return None


OVERVIEW: ProductId | None = None


def refusal_slots(outcomes: Mapping[str, float]) -> dict[str, float]:
    """The order call's refusals grouped as the page shows them (``ok`` is no refusal)."""
    slots = dict.fromkeys((*REFUSAL_SLOTS, "invalid", "other"), 0.0)
    for outcome, n in outcomes.items():
        if outcome == "ok":
            continue
        if outcome in slots:
            slots[outcome] += n
        elif outcome in INVALID_TYPES:
            slots["invalid"] += n
        else:
            slots["other"] += n
    return slots


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, interpolated linearly inside its bucket
    (as Prometheus' ``histogram_quantile``); None without observations. A quantile in the
    open-ended last bucket is reported as the largest finite bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def _minus(
    now: Sequence[tuple[float, float]], then: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    before = dict(then)
    # A worker that restarted resets its counters: never a negative count.
    return [(bound, max(0.0, count - before.get(bound, 0.0))) for bound, count in now]


@dataclass(slots=True)
class _Tick:
    at: float
    products: dict[ProductId, dict[str, Any]]
    #: Newest first: the overview's order.
    listed: list[ProductId]
    calls: dict[str, Any]
    lag: Mapping[str, float]
    error: str | None = None
    frames: dict[ProductId | None, bytes] = field(default_factory=dict)

    def frame(self, product_id: ProductId | None) -> bytes:
        encoded = self.frames.get(product_id)
        if encoded is None:
            encoded = orjson.dumps(self.body(product_id))
            self.frames[product_id] = encoded
        return encoded

    def body(self, product_id: ProductId | None) -> dict[str, Any]:
        body: dict[str, Any] = {"at": self.at, "orderCalls": self.calls, "lag": self.lag}
        if product_id is None:
            body["products"] = [self.products[p] for p in self.listed]
        else:
            body["product"] = self.products.get(product_id)
        if self.error is not None:
            body["error"] = self.error
        return body


class Viewer:
    """One open page: ``next()`` waits for the next frame (None once the watch closes)."""

    def __init__(self, watch: SaleWatch, product_id: ProductId | None) -> None:
        self._watch = watch
        self.product_id = product_id
        self._seen: _Tick | None = None

    def history(self) -> bytes:
        """The frames of the recent past (oldest first), for a page that just opened."""
        ticks = list(self._watch.history)
        if ticks:
            self._seen = ticks[-1]
        return orjson.dumps([t.body(self.product_id) for t in ticks])

    async def next(self) -> bytes | None:
        tick = await self._watch.after(self._seen)
        if tick is None:
            return None
        self._seen = tick
        return tick.frame(self.product_id)


class SaleWatch:
    """The per-process aggregation behind every open sale page (see the module)."""

    def __init__(
        self,
        figures: SaleFigures,
        order_calls: Callable[[], OrderCallsSample],
        lag: Callable[[], Awaitable[Mapping[str, float]]],
        *,
        queue: QueueFigures = _no_queue,
        every: float = 1.0,
        overview_size: int = 20,
        history: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._figures = figures
        self._order_calls = order_calls
        self._lag = lag
        self._queue = queue
        self._every = every
        self._overview_size = overview_size
        self._clock = clock
        self.history: deque[_Tick] = deque(maxlen=history)
        self._viewers: dict[ProductId | None, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._ticked = asyncio.Event()
        self._closed = False
        #: (time, cumulative sample) of recent ticks: the windows of the rates.
        self._calls: deque[tuple[float, OrderCallsSample]] = deque()
        self._previous: dict[ProductId, tuple[float, int, int]] = {}
        self._admitted: dict[ProductId, tuple[float, int]] = {}
        #: How many samples were taken: a test's proof that viewers share them.
        self.samples = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @asynccontextmanager
    async def watch(self, product_id: ProductId | None = OVERVIEW) -> AsyncIterator[Viewer]:
        """A viewer of one product (or of the overview, with None) while the block runs."""
        self._viewers[product_id] = self._viewers.get(product_id, 0) + 1
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="sale-watch")
        try:
            yield Viewer(self, product_id)
        finally:
            left = self._viewers[product_id] - 1
            if left:
                self._viewers[product_id] = left
            else:
                del self._viewers[product_id]
            if not self._viewers:
                await self._stop()

    async def after(self, seen: _Tick | None) -> _Tick | None:
        """The newest tick once there is one newer than ``seen``; None once closed."""
        while not self._closed:
            newest = self.history[-1] if self.history else None
            if newest is not None and newest is not seen:
                return newest
            await self._ticked.wait()
        return None

    async def close(self) -> None:
        """End every viewer's stream and the sampler (the process is stopping)."""
        self._closed = True
        self._ticked.set()
        await self._stop()

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                tick = await self.sample()
            except Exception as exc:
                # The page says what failed and the sampler goes on: a database that is
                # down for a minute is exactly when people look at this page.
                log.warning("sale_watch.sample_failed", exc_info=True)
                tick = _Tick(self._clock(), {}, [], {}, {}, error=f"{type(exc).__name__}")
            self.history.append(tick)
            # Wake every viewer at once; the next tick gets a fresh event to wait on.
            woken, self._ticked = self._ticked, asyncio.Event()
            woken.set()
            await asyncio.sleep(max(0.0, self._every - (time.monotonic() - started)))

    async def sample(self) -> _Tick:
        """Read every figure once and build the tick (what ``_run`` does each period)."""
        self.samples += 1
        watched = [p for p in self._viewers if p is not None]
        newest = self._overview_size if OVERVIEW in self._viewers else 0
        sales = await self._figures.products(watched, newest=newest)
        lag = await self._lag()
        # The watched products' queues only: the overview lists products, not their queues.
        async with asyncio.TaskGroup() as group:
            reads = {p: group.create_task(self._queue(p)) for p in watched}
        queues = {p: read.result() for p, read in reads.items()}
        at = self._clock()
        products = {s.product_id: self._product(s, at) for s in sales}
        for product_id, queue in queues.items():
            if product_id in products:
                products[product_id]["queue"] = (
                    None if queue is None else self._room(product_id, queue, at)
                )
        return _Tick(at, products, [s.product_id for s in sales], self._calls_at(at), lag)

    def _product(self, sale: ProductSale, at: float) -> dict[str, Any]:
        orders = {status: sale.orders.get(status, 0) for status in STATUS_SLOTS}
        orders.update(sale.orders)
        placed = sum(sale.orders.values())
        before = self._previous.get(sale.product_id)
        self._previous[sale.product_id] = (at, placed, sale.sold)
        per_second = sold_per_second = 0.0
        if before is not None and at > before[0]:
            per_second = max(0, placed - before[1]) / (at - before[0])
            sold_per_second = max(0, sale.sold - before[2]) / (at - before[0])
        return {
            "productId": sale.product_id,
            "name": sale.name,
            "stock": sale.stock,
            "available": sale.available,
            "sold": sale.sold,
            "ordersPerSecond": round(per_second, 2),
            "soldPerSecond": round(sold_per_second, 2),
            "orders": orders,
        }

    def _room(self, product_id: ProductId, queue: Mapping[str, Any], at: float) -> dict[str, Any]:
        admitted = int(queue.get("admitted") or 0)
        before = self._admitted.get(product_id)
        self._admitted[product_id] = (at, admitted)
        per_second = 0.0
        if before is not None and at > before[0]:
            per_second = max(0, admitted - before[1]) / (at - before[0])
        return {**queue, "admissionsPerSecond": round(per_second, 2)}

    def _calls_at(self, at: float) -> dict[str, Any]:
        sample = self._order_calls()
        self._calls.append((at, sample))
        while len(self._calls) > 2 and at - self._calls[1][0] >= LATENCY_WINDOW:
            self._calls.popleft()
        then_at, then = self._calls[0]
        last_at, last = self._calls[-2] if len(self._calls) > 1 else self._calls[0]
        accepted = refused = 0.0
        if at > last_at:
            for outcome, n in sample.outcomes.items():
                delta = max(0.0, n - last.outcomes.get(outcome, 0.0)) / (at - last_at)
                if outcome == "ok":
                    accepted += delta
                else:
                    refused += delta
        window = _minus(sample.latency_buckets, then.latency_buckets if at > then_at else ())
        latency = {
            name: (None if (v := quantile(q, window)) is None else round(v * 1000, 2))
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
        }
        return {
            "acceptedPerSecond": round(accepted, 2),
            "refusedPerSecond": round(refused, 2),
            "refusals": refusal_slots(sample.outcomes),
            "refusalsByType": {k: v for k, v in sample.outcomes.items() if k != "ok"},
            "accepted": sample.outcomes.get("ok", 0.0),
            "latencyMs": latency,
        }
