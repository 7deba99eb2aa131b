"""The bench's own calls to the service, outside the measured load: seeding, priming,
sampling the stock while the load runs, and waiting for the events to drain."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from flashorder_bench.auth import ADMIN_USER, Mint, bearer
from flashorder_bench.scenarios import ECHO_PATH, ProductSeed, order_body

TIMEOUT = aiohttp.ClientTimeout(total=30)
PAYMENTS_PATH = "/api/v1/payments/events"
SIGNATURE_HEADER = "Flashorder-Signature"


@dataclass(frozen=True, slots=True)
class Drain:
    """How the wait for the events ended: whether the lag read 0 (with a live projector when
    one was needed), after how long, and how many projectors reported last."""

    drained: bool
    seconds: float
    projectors: int


class BenchClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, mint: Mint):
        self.session = session
        self.base_url = base_url
        self.mint = mint
        self.admin = bearer(mint, ADMIN_USER, admin=True)

    async def _call(
        self,
        method: str,
        path: str,
        body: object = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = orjson.dumps(body) if body is not None else None
        async with self.session.request(
            method,
            self.base_url + path,
            data=data,
            headers={"Content-Type": "application/json", **(headers or {})},
            timeout=TIMEOUT,
        ) as answer:
            raw = await answer.read()
            return answer.status, orjson.loads(raw) if raw else None

    async def seed(self, seeds: Sequence[ProductSeed], *, parallel: int = 16) -> None:
        """Create the products (as admin), ``parallel`` at a time."""
        gate = asyncio.Semaphore(parallel)

        async def create(seed: ProductSeed) -> None:
            body: dict[str, object] = {
                "productId": seed.product_id,
                "name": f"bench {seed.product_id}",
                "price": seed.price,
                "stock": seed.stock,
            }
            if seed.max_per_user is not None:
                body["maxPerUser"] = seed.max_per_user
            if seed.pay_within is not None:
                body["payWithinSeconds"] = seed.pay_within
            if seed.sale_starts_at is not None:
                body["saleStartsAt"] = seed.sale_starts_at.isoformat()
            if seed.queued:
                body["queued"] = True
                body["admissionPerSecond"] = seed.admission_per_second
                if seed.queue_opens_at is not None:
                    body["queueOpensAt"] = seed.queue_opens_at.isoformat()
            async with gate:
                status, answer = await self._call("POST", "/api/v1/products", body, self.admin)
            if status != 201:
                raise RuntimeError(f"seeding {seed.product_id}: {status} {answer}")

        async with asyncio.TaskGroup() as group:
            for seed in seeds:
                group.create_task(create(seed))

    async def place(self, user: str, product: str, quantity: int, price: int) -> str | None:
        """Place one order (priming the mixed scenario); its id, or None if refused."""
        return (await self.order(user, product, quantity, price))[1]

    async def order(
        self, user: str, product: str, quantity: int, price: int
    ) -> tuple[int, str | None]:
        """Place one order: the answer's status, and the order's id if it was placed."""
        status, answer = await self._call(
            "POST",
            "/api/v1/orders",
            orjson.loads(order_body(user, product, quantity, price)),
            bearer(self.mint, user),
        )
        return status, str(answer["orderId"]) if status == 201 else None

    async def pay(self, secret: str, event_id: str, order_id: str, amount: int) -> int:
        """Deliver a payment provider's ``succeeded`` event for an order, signed as the
        webhook wants it (docs/lifecycle.md): HMAC-SHA256 of ``<unix time>.<body>``. The
        answer's status."""
        body = orjson.dumps(
            {"eventId": event_id, "orderId": order_id, "amount": amount, "status": "succeeded"}
        )
        stamp = int(time.time())
        digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: f"t={stamp},v1={digest.hexdigest()}",
        }
        async with self.session.post(
            self.base_url + PAYMENTS_PATH, data=body, headers=headers, timeout=TIMEOUT
        ) as answer:
            await answer.read()
            return answer.status

    async def available(self, product_id: str) -> int | None:
        path = f"/api/v1/products/{product_id}"
        status, answer = await self._call("GET", path, headers=self.admin)
        return int(answer["available"]) if status == 200 else None

    async def has_echo(self) -> bool:
        status, _ = await self._call("POST", ECHO_PATH, {}, self.admin)
        return status != 404

    async def lag(self) -> dict[str, float]:
        _, answer = await self._call("GET", "/readyz")
        lag = answer.get("lag", {}) if isinstance(answer, dict) else {}
        return {str(k): float(v) for k, v in lag.items()}

    async def drained(self, *, need_projector: bool, timeout: float = 600.0) -> Drain:
        """Wait until ``/readyz`` reports no event left to apply.

        The lag must read 0 twice in a row, a second apart: the projector reports about once
        a second, and one report may predate the last events. With ``need_projector`` (a
        stack with Kafka) a projector must also have reported lately (``lag.projectors``):
        without one, the lag counts only the outbox and reads 0 while the read model stays
        behind.
        """
        started = time.monotonic()
        zeros, projectors = 0, 0
        while time.monotonic() - started < timeout:
            try:
                lag = await self.lag()
            except (aiohttp.ClientError, TimeoutError):
                lag = {}
            projectors = int(lag.get("projectors", 0))
            live = projectors >= 1 or not need_projector
            zeros = zeros + 1 if lag.get("events", -1) == 0 and live else 0
            if zeros >= 2:
                return Drain(True, time.monotonic() - started, projectors)
            await asyncio.sleep(1.0)
        return Drain(False, time.monotonic() - started, projectors)


class StockSampler:
    """Reads a product's ``available`` every ``every`` seconds while a phase runs."""

    def __init__(self, client: BenchClient, product_id: str, *, every: float = 0.25):
        self.client = client
        self.product_id = product_id
        self.every = every
        self.points: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            try:
                value = await self.client.available(self.product_id)
            except (aiohttp.ClientError, TimeoutError):
                value = None
            if value is not None:
                self.points.append((time.monotonic(), value))
            await asyncio.sleep(self.every)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="stock-sampler")

    async def stop(self) -> list[tuple[float, int]]:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        # One last reading, at rest.
        value = await self.client.available(self.product_id)
        if value is not None:
            self.points.append((time.monotonic(), value))
        return self.points
