"""Fault drills: the real stack under a burst of orders while one of its parts fails.

Each drill runs a stack of its own (database, Redis database, topics), has buyers order
without pause, breaks something in the middle, lets the buyers go on after recovery, and
then proves that nothing was lost or oversold:

- every client retries what did not get a definite answer (a 503 or a broken connection)
  with the same Idempotency-Key, as a client should, until it gets one;
- the database then holds exactly the orders clients were told about, one per buyer, each
  whole (items and outbox row), and no idempotency record without its order;
- reconciliation (the documented recovery after a crash or a Redis restart; the
  ``flashorder reconcile`` command in the worker-kill drill, the same run in process in the
  others) runs, and the stock invariants hold: no oversell, ``stock == available + sold``,
  gate == DB.

What clients saw is printed per phase (``-s``): before the fault, during it, after it.

The Redis and MariaDB drills stop and start the server with ``scripts/services.sh``: every
database on it goes down too, and Redis comes back empty. So the drills run on a MariaDB and
a Redis of their own (``conftest.py``: their own services folder and free ports), and
``make test`` runs them with the rest of the suite.

Kafka going down, and the relay or the projector killed, are drilled by
``tests/integration/test_event_flow.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.sql.engine import make_engine
from flashorder.adapters.stock.redis import RedisStockGate
from flashorder.application.reconcile import reconcile
from flashorder.bootstrap import build
from flashorder.config import Settings
from flashorder.domain.events import ORDER_CREATED
from flashorder.domain.model import ProductId
from flashorder.entrypoints.tokens import mint_token
from flashorder_bench.stack import EXE, Stack
from tests.invariants import check_stock
from tests.support.crowd import DEFINITE, Attempt, Phases, burst_through, retry_until_definite
from tests.support.own_services import SERVICES, DrillServices

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.drill]

PRICE = 10050
PROBLEM = "urn:flashorder:problem:"


# --- the buyers --------------------------------------------------------------------------------


@dataclass
class Shop:
    """Buyers over real HTTP, with tokens minted for the stack's secret."""

    stack: Stack
    session: aiohttp.ClientSession
    engine: AsyncEngine
    gate: RedisStockGate
    settings: Settings = field(default_factory=Settings)

    async def add_product(self, stock: int) -> str:
        pid = f"PRD_{secrets.token_hex(6)}"
        body = {"productId": pid, "name": "drill item", "price": PRICE, "stock": stock}
        token = mint_token(self.settings, "drill-admin", admin=True)
        answer, _ = await self._post("/api/v1/products", body, token=token)
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
        attempt.answer, reply = await self._post(
            "/api/v1/orders",
            body,
            token=mint_token(self.settings, attempt.user),
            headers={"Idempotency-Key": attempt.key},
        )
        attempt.at = time.monotonic()
        if attempt.answer.startswith("201"):
            attempt.order_id = reply["orderId"]

    async def _post(
        self, path: str, body: Any, *, token: str, headers: dict[str, str] | None = None
    ) -> tuple[str, Any]:
        sent = {"Authorization": f"Bearer {token}", **(headers or {})}
        try:
            async with self.session.post(self.stack.base + path, json=body, headers=sent) as got:
                reply = await got.json(content_type=None)
                if got.status == 409:
                    return f"409 {reply['type'].removeprefix(PROBLEM)}", reply
                if got.headers.get("Idempotent-Replayed") == "true":
                    return f"{got.status} replayed", reply
                return str(got.status), reply
        except aiohttp.ClientConnectionError:
            return "connection error", None
        except TimeoutError:
            return "timeout", None


def report(title: str, attempts: list[Attempt], phases: Phases, finals: Counter[str]) -> None:
    took = max(a.first_at for a in attempts) - min(a.first_at for a in attempts)
    print(f"\n== {title}: {len(attempts)} orders in {took:.1f}s, 32 buyers")
    for phase in ("before", "during", "after"):
        seen = Counter(a.first for a in attempts if phases.of(a.first_at) == phase)
        print(f"   {phase:>6}: {dict(sorted(seen.items()))}")
    recovered = [a.first_at for a in attempts if a.first == "201" and a.first_at > phases.back_at]
    if recovered:
        print(f"   first 201 {min(recovered) - phases.back_at:.2f}s after the service was back")
    retried = sum(a.retries > 0 for a in attempts)
    print(f"   retried with the same key: {retried}; final answers: {dict(sorted(finals.items()))}")
    # Told "503" or cut off, though the order had committed: the retry got the order back.
    late = Counter(a.first for a in attempts if a.answer == "201 replayed")
    print(f"   committed although the first answer was {dict(late)}")


# --- the proofs --------------------------------------------------------------------------------


async def check_nothing_lost(shop: Shop, attempts: list[Attempt]) -> None:
    """The database holds exactly the orders the clients were told about, each whole."""
    async with shop.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT order_id, user_id FROM orders"))).all()
        no_items = (
            await conn.execute(
                text(
                    "SELECT COUNT(*) FROM orders o WHERE NOT EXISTS "
                    "(SELECT 1 FROM order_items i WHERE i.order_id = o.order_id)"
                )
            )
        ).scalar_one()
        no_event = (
            await conn.execute(
                text(
                    "SELECT COUNT(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM outbox x "
                    "WHERE x.aggregate_id = o.order_id AND x.type = :created)"
                ),
                {"created": ORDER_CREATED},
            )
        ).scalar_one()
        records = (await conn.execute(text("SELECT body FROM idempotency_records"))).scalars()
        recorded = {json.loads(body)["orderId"] for body in records}
    stored: dict[str, list[str]] = {}
    for order_id, user_id in rows:
        stored.setdefault(user_id, []).append(order_id)
    assert (no_items, no_event) == (0, 0), "an order without its items or its outbox row"
    assert recorded <= {order_id for order_id, _ in rows}, "an idempotency record without order"
    assert [u for u, ids in stored.items() if len(ids) > 1] == [], "a buyer with two orders"
    told = {a.user: a.order_id for a in attempts if a.order_id is not None}
    assert {u: ids[0] for u, ids in stored.items()} == told, "orders and answers differ"


async def reconcile_and_check(
    shop: Shop, products: list[str], *, cli: bool
) -> dict[str, dict[str, int]]:
    # Every request has its answer: a reservation still pending belongs to a dead worker.
    await asyncio.sleep(1.5)
    drift = {}
    async with shop.engine.connect() as conn:
        for pid in products:
            available = (
                await conn.execute(
                    text("SELECT available FROM products WHERE product_id = :p"), {"p": pid}
                )
            ).scalar_one()
            drift[pid] = f"gate {await shop.gate.available(ProductId(pid))} / db {available}"
    print(f"   before reconcile: {drift}")
    repaired = await (reconcile_by_cli if cli else reconcile_in_process)(shop.stack)
    print(
        f"   reconcile: released {len(repaired['released'])}, confirmed "
        f"{len(repaired['confirmed'])}, fixed {repaired['fixed']}"
    )
    figures = await check_stock(shop.engine, shop.gate, products)
    print(f"   stock: {figures}")
    return figures


async def reconcile_by_cli(stack: Stack) -> dict[str, Any]:
    """``flashorder reconcile``, as an operator runs it."""
    done = await asyncio.to_thread(
        subprocess.run,
        [EXE, "reconcile", "--older-than", "1"],
        env=stack.env,
        capture_output=True,
        check=True,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


async def reconcile_in_process(stack: Stack) -> dict[str, Any]:
    """The same run in this process (a CLI process starts slowly on a loaded machine)."""
    settings = Settings(
        database_url=stack.database_url,
        redis_url=stack.redis_url,
        kafka_bootstrap=stack.env["FLASHORDER_KAFKA_BOOTSTRAP"],
        data_dir=stack.logs,
    )
    async with build(settings, background=False) as service:
        assert service.gate is not None
        report = await reconcile(
            uow=service.deps.uow, stock=service.gate, locks=service.deps.locks, older_than=1
        )
    return report.as_dict()


def no_errors_but_503(attempts: list[Attempt]) -> None:
    bad = Counter(
        answer
        for a in attempts
        for answer in (a.first, a.answer)
        if answer[0] in "45" and answer not in ("503", "409 sold-out", "409 duplicate-in-flight")
    )
    assert bad == {}, f"answers no client should see: {bad}"


# --- the stack ----------------------------------------------------------------------------------


@pytest.fixture
def drill_stack(
    mariadb_url: str, redis_url: str, kafka_bootstrap: str, tmp_path: Path
) -> Iterator[Callable[..., Awaitable[Stack]]]:
    """Makes a stack; ``events=False`` leaves out the relay and the projector (the event flow
    has drills of its own in ``tests/integration/test_event_flow.py``)."""
    made: list[Stack] = []

    async def make(redis_db: int, *, events: bool = False) -> Stack:
        stack = Stack(
            mariadb_url=mariadb_url,
            redis_url=redis_url,
            kafka_bootstrap=kafka_bootstrap,
            logs=tmp_path,
            redis_db=redis_db,
            # A dead worker's idempotency keys go free sooner than by default, so that the
            # clients' retries get their answers within the drill. The lease must outlast
            # any request (the deadline): a request still at work when its key lapsed
            # could meet a retry that is answered before it.
            extra_env={
                "FLASHORDER_IDEMPOTENCY_LEASE_SECONDS": "10",
                "FLASHORDER_REQUEST_TIMEOUT_SECONDS": "8",
            },
        )
        made.append(stack)
        started = time.monotonic()
        n = 1 if events else 0
        # Generous: on a shared machine under load, starting the processes takes long.
        await asyncio.to_thread(stack.up, relays=n, projectors=n, timeout=180)
        print(f"\n   stack up in {time.monotonic() - started:.1f}s", end="")
        return stack

    try:
        yield make
    finally:
        for stack in made:
            stack.down()


@asynccontextmanager
async def shop_of(stack: Stack) -> AsyncIterator[Shop]:
    engine = make_engine(stack.database_url, pool_size=4)
    redis = Redis.from_url(stack.redis_url)
    connector = aiohttp.TCPConnector(limit=200)
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            yield Shop(stack, session, engine, RedisStockGate(redis))
    finally:
        await redis.aclose()
        await engine.dispose()


async def wait_ready(stack: Stack, timeout: float = 60) -> None:
    await asyncio.to_thread(stack.wait_ready, timeout)


async def services(action: str, name: str, *, own: DrillServices) -> None:
    """``scripts/services.sh ACTION NAME`` on the drills' own servers (``conftest``)."""
    proc = await asyncio.create_subprocess_exec(
        str(SERVICES),
        action,
        name,
        env=own.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(120):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()


def worker_pids(api_pid: int) -> set[int]:
    """The uvicorn worker processes under the API's supervisor (not multiprocessing's
    resource tracker, its other child)."""
    children: set[int] = set()
    for task in Path(f"/proc/{api_pid}/task").iterdir():
        try:
            children |= {int(pid) for pid in (task / "children").read_text().split()}
        except FileNotFoundError:
            continue
    workers = set()
    for pid in children:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except FileNotFoundError:
            continue
        if b"spawn_main" in command:
            workers.add(pid)
    return workers


async def lag_drained(shop: Shop, timeout: float = 90) -> float:
    """Seconds until ``/readyz`` reports no event waiting for the read model."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        async with shop.session.get(shop.stack.base + "/readyz") as got:
            lag = (await got.json())["lag"]
        if lag["events"] == 0 and lag["projectors"] > 0:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise TimeoutError(f"events still waiting after {timeout}s: {lag}")


def connections(pid: int, port: int) -> int:
    """Established TCP connections of process ``pid`` on local ``port`` (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            established = state == "01"
            if established and int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:
                count += 1
    return count


async def replaced(api_pid: int, victim: int, workers: int, timeout: float = 30) -> float:
    """When the supervisor had ``workers`` workers again, none of them ``victim``."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if len(worker_pids(api_pid) - {victim}) >= workers:
            return time.monotonic()
        await asyncio.sleep(0.2)
    raise TimeoutError(f"worker {victim} was not replaced within {timeout}s")


# --- the drills ---------------------------------------------------------------------------------


async def finish(
    title: str,
    shop: Shop,
    products: list[str],
    attempts: list[Attempt],
    phases: Phases,
    *,
    cli: bool = False,
) -> dict[str, dict[str, int]]:
    for attempt in attempts:
        attempt.first, attempt.first_at = attempt.answer, attempt.at
    started = time.monotonic()
    await retry_until_definite(shop, attempts, deadline=60)
    finals = Counter(a.answer for a in attempts)
    report(title, attempts, phases, finals)
    print(f"   retries took {time.monotonic() - started:.1f}s")
    assert set(finals) <= DEFINITE, f"clients left without an answer: {finals}"
    no_errors_but_503(attempts)
    await check_nothing_lost(shop, attempts)
    started = time.monotonic()
    figures = await reconcile_and_check(shop, products, cli=cli)
    print(f"   reconcile and checks took {time.monotonic() - started:.1f}s")
    return figures


async def test_an_api_worker_killed_mid_burst_loses_nothing_and_is_replaced(
    drill_stack: Callable[..., Awaitable[Stack]],
) -> None:
    stack = await drill_stack(4)
    api = stack.procs["api"][0]
    async with shop_of(stack) as shop:
        products = [await shop.add_product(20), await shop.add_product(100_000)]
        workers = worker_pids(api.pid)
        assert len(workers) == stack.api_workers, workers
        killed: list[tuple[int, int]] = []

        async def kill_a_worker(phases: Phases) -> None:
            # The worker holding most of the buyers' connections: its requests are cut.
            victim = max(workers, key=lambda pid: connections(pid, stack.port))
            killed.append((victim, connections(victim, stack.port)))
            phases.fault_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            # uvicorn's supervisor notices within a second and starts a new worker.
            phases.back_at = await replaced(api.pid, victim, stack.api_workers)

        attempts, phases = await burst_through(shop, products, kill_a_worker)
        (victim, held), took = killed[0], phases.back_at - phases.fault_at
        print(f"\n   worker {victim} killed with {held} connections; replaced {took:.1f}s later")
        figures = await finish(
            "kill -9 of an API worker", shop, products, attempts, phases, cli=True
        )
        # Units the dead worker had reserved were refused to everyone until reconciliation
        # gave them back: whatever is left of the scarce product sells again.
        if figures[products[0]]["available"] > 0:
            late = Attempt(f"late_{secrets.token_hex(4)}", secrets.token_hex(12), products[0])
            await shop.order(late)
            assert late.answer == "201", late.answer
    assert sum(a.first == "connection error" for a in attempts) > 0, "no request was cut"
    # Only the victim was replaced: the supervisor did not take the others for hung.
    assert workers - {victim} <= worker_pids(api.pid), "a surviving worker was killed too"


async def test_redis_restarted_empty_mid_burst_answers_503_then_recovers_by_itself(
    drill_stack: Callable[..., Awaitable[Stack]], drill_services: DrillServices
) -> None:
    stack = await drill_stack(5)
    async with shop_of(stack) as shop:
        products = [await shop.add_product(20), await shop.add_product(100_000)]

        async def restart_redis(phases: Phases) -> None:
            phases.fault_at = time.monotonic()
            try:
                await services("down", "redis", own=drill_services)
                await asyncio.sleep(3)
            finally:
                await services("up", "redis", own=drill_services)
            phases.back_at = time.monotonic()

        attempts, phases = await burst_through(shop, products, restart_redis)
        figures = await finish("Redis restarted (empty)", shop, products, attempts, phases)
    during = Counter(a.first for a in attempts if phases.of(a.first_at) == "during")
    after = Counter(a.first for a in attempts if phases.of(a.first_at) == "after")
    assert during["503"] > 0, during
    assert after["201"] > 0, "orders flow again once Redis is back"
    assert figures[products[0]]["available"] == 0


async def test_mariadb_stopped_mid_burst_answers_503_writes_nothing_half_and_recovers(
    drill_stack: Callable[..., Awaitable[Stack]], drill_services: DrillServices
) -> None:
    stack = await drill_stack(6, events=True)
    async with shop_of(stack) as shop:
        products = [await shop.add_product(20), await shop.add_product(100_000)]

        async def stop_mariadb(phases: Phases) -> None:
            phases.fault_at = time.monotonic()
            try:
                await services("down", "mariadb", own=drill_services)
                await asyncio.sleep(3)
            finally:
                await services("up", "mariadb", own=drill_services)
            phases.back_at = time.monotonic()

        attempts, phases = await burst_through(shop, products, stop_mariadb)
        # The pools drop their dead connections (the error of a used one, the ping of one idle
        # for over 0.5 s) and open new ones: no restart.
        await wait_ready(stack)
        figures = await finish("MariaDB stopped for 3 s", shop, products, attempts, phases)
        # The relay and the projector rode the outage out too: every event reaches the read
        # model (the API reports no lag).
        lag = await lag_drained(shop)
        print(f"   events: relay and projector caught up {lag:.1f}s after the checks")
    during = Counter(a.first for a in attempts if phases.of(a.first_at) == "during")
    after = Counter(a.first for a in attempts if phases.of(a.first_at) == "after")
    assert during["503"] > 0, during
    assert after["201"] > 0, "orders flow again once MariaDB is back"
    assert figures[products[0]]["available"] == 0
