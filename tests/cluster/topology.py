"""The multi-host topology of ``scripts/cluster.sh``, driven from tests: up, faults, down,
buyers over the load balancer, and the proofs afterwards.

The tests take the upper half of 10.77.0.0/24 (``CLUSTER_NET_BASE=128``) and names of their
own, so they never meet a topology that ``make cluster`` left running; a machine-wide lock
keeps two test runs from building theirs at once.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import secrets
import socket
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.sql.engine import make_engine
from flashorder.adapters.stock.redis_cluster import ShardedStockGate
from flashorder.application.reconcile import reconcile
from flashorder.bootstrap import build, redis_client
from flashorder.config import Settings
from flashorder.domain.events import ORDER_CREATED
from flashorder.entrypoints.tokens import mint_token
from tests import redis_cluster
from tests.events_check import check_events, published, read_model_differences, write_model
from tests.invariants import check_stock
from tests.support.crowd import Attempt, Phases, retry_until_definite

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cluster.sh"
LOCK = Path("/tmp/flashorder-cluster-tests.lock")
PRICE = 10050
PROBLEM = "urn:flashorder:problem:"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def built(workdir: Path, mariadb_url: str, *, reduced: bool) -> Iterator[Topology]:
    """A topology up for the body, and removed after it whatever happened."""
    assert os.geteuid() == 0, "the cluster topology needs root (network namespaces)"
    topology = Topology(workdir, mariadb_url, reduced=reduced)
    try:
        topology.up()
        print(f"\n== {'reduced' if reduced else 'full'} topology up in {topology.took:.1f}s")
        yield topology
    finally:
        topology.down()


class Topology:
    """``up()`` builds it (reduced: two API hosts, one broker), ``down()`` removes it all."""

    def __init__(self, workdir: Path, mariadb_url: str, *, reduced: bool) -> None:
        self.reduced = reduced
        self.database = f"flashorder_cl_{secrets.token_hex(4)}"
        self.lb_port = _free_port()
        self.base = f"http://127.0.0.1:{self.lb_port}"
        self.mariadb_url = mariadb_url
        self.env = {
            **os.environ,
            "CLUSTER_DIR": str(workdir),
            "CLUSTER_NAME": "foct",
            "CLUSTER_NET_BASE": "128",
            "CLUSTER_LB_PORT": str(self.lb_port),
            "CLUSTER_DATABASE": self.database,
            "MARIADB_PORT": str(mariadb_url.rsplit(":", 1)[1]),
        }
        self.settings: dict[str, str] = {}
        self._lock: int | None = None
        self.took = 0.0

    def up(self) -> None:
        self._lock = os.open(LOCK, os.O_CREAT | os.O_RDWR)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        started = time.monotonic()
        self.script("up", *(["--reduced"] if self.reduced else []), timeout=600)
        self.took = time.monotonic() - started
        listed = self.script("env").splitlines()
        self.settings = dict(line.split("=", 1) for line in listed if "=" in line)

    def down(self) -> None:
        try:
            self.script("down", timeout=180)
        finally:
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None

    def script(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            ["bash", str(SCRIPT), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"cluster.sh {' '.join(args)}: {done.stderr[-3000:]}")
        return done.stdout

    def service_settings(self) -> Settings:
        """The topology's settings as seen from this host (the database on 127.0.0.1)."""
        return Settings(
            database_url=f"{self.mariadb_url}/{self.database}",
            redis_url=self.settings["FLASHORDER_REDIS_URL"],
            kafka_bootstrap=self.settings["FLASHORDER_KAFKA_BOOTSTRAP"],
            kafka_topic_prefix=self.settings["FLASHORDER_KAFKA_TOPIC_PREFIX"],
        )

    async def promoted(self, replica: int, timeout: float = 30) -> float:
        """Seconds until the Redis replica on port ``replica`` reports itself master."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            role = await asyncio.to_thread(self.script, "redis-role", str(replica))
            if role.strip() == "master":
                return time.monotonic() - started
            await asyncio.sleep(0.2)
        raise TimeoutError(f"replica :{replica} not promoted in {timeout}s")

    async def master_of(self, product_id: str) -> tuple[int, int]:
        """The ports of the master that holds the product's slot, and of its replica."""
        client = redis_cluster.client(self.settings["FLASHORDER_REDIS_URL"])
        try:
            slot = int(await client.cluster_keyslot(f"{{p:{product_id}}}"))
            shards = await client.cluster_shards()
        finally:
            await client.aclose()
        for shard in shards:
            info = {_s(k): v for k, v in _pairs(shard)}
            ranges = [int(x) for x in info["slots"]]
            if any(lo <= slot <= hi for lo, hi in zip(ranges[::2], ranges[1::2], strict=True)):
                nodes = [{_s(k): v for k, v in _pairs(node)} for node in info["nodes"]]
                master = next(n for n in nodes if _s(n["role"]) == "master")
                replica = next(n for n in nodes if _s(n["role"]) == "replica")
                return int(master["port"]), int(replica["port"])
        raise LookupError(f"no shard holds slot {slot}")


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Any) -> list[tuple[Any, Any]]:
    if isinstance(flat, dict):
        return list(flat.items())
    return list(zip(flat[::2], flat[1::2], strict=True))


# --- buyers ------------------------------------------------------------------------------------


@dataclass
class Shop:
    """Buyers over the load balancer, and the stores to check afterwards."""

    topology: Topology
    session: aiohttp.ClientSession
    engine: AsyncEngine
    gate: ShardedStockGate
    settings: Settings = field(default_factory=Settings)

    async def add_product(self, stock: int) -> str:
        pid = f"PRD_{secrets.token_hex(6)}"
        body = {"productId": pid, "name": "cluster item", "price": PRICE, "stock": stock}
        token = mint_token(self.settings, "cluster-admin", admin=True)
        answer, _, _ = await self.post("/api/v1/products", body, token=token)
        assert answer == "201", answer
        return pid

    async def order(self, attempt: Attempt) -> None:
        body = {
            "userId": attempt.user,
            "items": [{"productId": attempt.product_id, "quantity": 1, "productPrice": PRICE}],
            "discountPolicyId": None,
            "discountAmount": None,
            "deliveryFee": 0,
            "paymentAmount": PRICE,
            "paymentType": "CREDIT",
        }
        attempt.answer, reply, attempt.host = await self.post(
            "/api/v1/orders",
            body,
            token=mint_token(self.settings, attempt.user),
            headers={"Idempotency-Key": attempt.key},
        )
        attempt.at = time.monotonic()
        if not attempt.first:
            attempt.first, attempt.first_at = attempt.answer, attempt.at
        if attempt.answer.startswith("201"):
            attempt.order_id = reply["orderId"]

    async def post(
        self, path: str, body: Any, *, token: str, headers: dict[str, str] | None = None
    ) -> tuple[str, Any, str]:
        sent = {"Authorization": f"Bearer {token}", **(headers or {})}
        url = self.topology.base + path
        try:
            async with self.session.post(url, json=body, headers=sent) as got:
                if got.content_type != "application/json" and "json" not in got.content_type:
                    # The load balancer's own page: no host could take the request.
                    return str(got.status), None, ""
                reply = await got.json(content_type=None)
                host = got.headers.get("X-Served-By", "")
                if got.status == 409:
                    return f"409 {reply['type'].removeprefix(PROBLEM)}", reply, host
                if got.status == 503 and "Retry-After" not in got.headers:
                    return "503 without Retry-After", reply, host
                if got.headers.get("Idempotent-Replayed") == "true":
                    return f"{got.status} replayed", reply, host
                return str(got.status), reply, host
        except aiohttp.ClientConnectionError:
            return "connection error", None, ""
        except TimeoutError:
            return "timeout", None, ""

    async def get(self, path: str, *, token: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.get(self.topology.base + path, headers=headers) as got:
            return got.status, await got.json(content_type=None)


@asynccontextmanager
async def shop_of(topology: Topology) -> AsyncIterator[Shop]:
    settings = topology.service_settings()
    assert settings.database_url is not None
    engine = make_engine(settings.database_url, pool_size=4)
    client = redis_client(settings)
    timeout = aiohttp.ClientTimeout(total=20)
    try:
        async with aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=300)
        ) as session:
            yield Shop(topology, session, engine, ShardedStockGate(client))
    finally:
        await client.aclose()
        await engine.dispose()


async def race(shop: Shop, product_id: str, buyers: int) -> list[Attempt]:
    """``buyers`` buyers at once, one unit each, each retrying until told (same key)."""
    attempts = [
        Attempt(f"b{n}_{secrets.token_hex(4)}", secrets.token_hex(12), product_id)
        for n in range(buyers)
    ]
    await asyncio.gather(*(shop.order(a) for a in attempts))
    undecided = await retry_until_definite(shop, attempts, deadline=60)
    assert not undecided, f"no definite answer after 60s of retries: {undecided}"
    return attempts


def report(title: str, attempts: list[Attempt], phases: Phases) -> dict[str, Any]:
    """Print what buyers saw per phase (``-s``) and return it, for the docs' tables."""
    firsts = {}
    for phase in ("before", "during", "after"):
        seen = Counter(a.first for a in attempts if phases.of(a.first_at) == phase)
        firsts[phase] = dict(sorted(seen.items()))
    finals = dict(sorted(Counter(a.answer for a in attempts).items()))
    late = dict(Counter(a.first for a in attempts if a.answer == "201 replayed"))
    figures = {
        "orders": len(attempts),
        "first answers": firsts,
        "final answers": finals,
        "retried": sum(a.retries > 0 for a in attempts),
        "committed though first told": late,
        "hosts": dict(Counter(a.host for a in attempts if a.host)),
    }
    print(f"\n== {title}: {json.dumps(figures)}")
    return figures


# --- the proofs ----------------------------------------------------------------------------------


async def check_nothing_lost(shop: Shop, attempts: list[Attempt]) -> None:
    """The database holds exactly the orders the buyers were told about, one per buyer."""
    users = {a.user for a in attempts}
    async with shop.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT order_id, user_id FROM orders"))).all()
        no_event = (
            await conn.execute(
                text(
                    "SELECT COUNT(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM outbox x "
                    "WHERE x.aggregate_id = o.order_id AND x.type = :created)"
                ),
                {"created": ORDER_CREATED},
            )
        ).scalar_one()
    stored: dict[str, list[str]] = {}
    for order_id, user_id in rows:
        if user_id in users:
            stored.setdefault(user_id, []).append(order_id)
    assert no_event == 0, "an order without its outbox row"
    assert [u for u, ids in stored.items() if len(ids) > 1] == [], "a buyer with two orders"
    told = {a.user: a.order_id for a in attempts if a.order_id is not None}
    assert {u: ids[0] for u, ids in stored.items()} == told, "orders and answers differ"


async def reconcile_and_check(shop: Shop, products: list[str]) -> dict[str, dict[str, int]]:
    """Reconciliation (in this process, as every API process runs it), then the stock
    promises: no oversell, ``stock == available + sold``, gate == database."""
    async with build(shop.topology.service_settings(), background=False) as service:
        assert service.gate is not None
        repaired = await reconcile(
            uow=service.deps.uow, stock=service.gate, locks=service.deps.locks, older_than=1
        )
    print(f"   reconcile: {json.dumps(repaired.as_dict())[:400]}")
    return await check_stock(shop.engine, shop.gate, products)


async def check_events_and_read_model(shop: Shop, *, timeout: float = 90) -> None:
    """Every committed change on the broker exactly once; the read model equals the write
    model once the stream is drained."""
    prefix = shop.topology.settings["FLASHORDER_KAFKA_TOPIC_PREFIX"]
    bootstrap = shop.topology.settings["FLASHORDER_KAFKA_BOOTSTRAP"]
    deadline = time.monotonic() + timeout
    differences: list[str] = ["not compared"]
    while time.monotonic() < deadline:
        written = await write_model(shop.engine)
        differences = await read_model_differences(shop.engine, written)
        if not differences:
            break
        await asyncio.sleep(0.5)
    assert not differences, differences[:10]
    events = await published(bootstrap, prefix, timeout=timeout)
    figures = check_events(events, await write_model(shop.engine))
    print(f"   events: {figures}")
