"""Order → outbox → relay → Kafka → projector → read model, on real processes and services.

Each test runs a stack of its own (database, topics, consumer group; Redis database 3),
bursts orders at it over HTTP, disturbs it (Kafka down, a worker killed, two of each), and
ends with the same proof: no oversell (``check_stock``), the topics hold exactly the
committed changes (``check_events``) and the read model equals the write model
(``wait_converged``). One test needs no stack: a transaction that fails after its reservation.

Run with ``-s`` to see the figures, among them the commit → read-model latency under a burst.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.idempotency.redis import RedisIdempotencyCache
from flashorder.adapters.locks.redis import RedisLocks
from flashorder.adapters.sql.engine import make_engine
from flashorder.adapters.sql.outbox import SqlOutboxRelayStore
from flashorder.adapters.sql.uow import SqlUnitOfWork, SqlUnitOfWorkFactory
from flashorder.adapters.stock.redis import RedisStockGate
from flashorder.application import handlers
from flashorder.application.handlers import Deps
from flashorder.application.ports import OrderRepository
from flashorder.application.relay import relay_once
from flashorder.domain import commands, errors
from flashorder.domain.events import ORDER_CREATED, STOCK_CHANGED, Event
from flashorder.domain.model import Order, OrderId, PaymentType, ProductId, UserId
from flashorder.domain.pricing import RequestedLine
from flashorder_bench.stack import Stack, free_port
from tests.events_check import (
    EventFigures,
    check_events,
    latency,
    published,
    read_lag,
    wait_converged,
)
from tests.invariants import check_stock
from tests.support.api import HttpApi, Reply
from tests.support.calls import new_product, place, rid
from tests.support.deps import reserving
from tests.support.own_services import DrillServices
from tests.support.sql import migrated_database

pytestmark = [pytest.mark.services, pytest.mark.slow]

#: This module's Redis database (the e2e stack uses 1, other suites 0 and 15).
REDIS_DB = 3
PRICE = 10050
SERVICES = Path(__file__).resolve().parents[2] / "scripts" / "services.sh"
SOLD_OUT = "urn:flashorder:problem:sold-out"
IN_FLIGHT = "urn:flashorder:problem:duplicate-in-flight"
#: How long a buyer retries a request that keeps getting 503 or 409 in-flight: well past the
#: API's request deadline (15 s) and the in-flight claim of an idempotency key (30 s).
RETRY_FOR = 120.0
CONNECTIONS = 100


# --- stacks and clients ------------------------------------------------------------------------


class Stacks:
    """Starts stacks for one test and takes every one of them down afterwards."""

    def __init__(self, mariadb_url: str, redis_url: str, kafka_bootstrap: str, logs: Path) -> None:
        self._args = (mariadb_url, redis_url, kafka_bootstrap)
        self._logs = logs
        self.bootstrap = kafka_bootstrap
        self.started: list[Stack] = []

    async def up(self, *, relays: int = 1, projectors: int = 1) -> Stack:
        mariadb_url, redis_url, kafka_bootstrap = self._args
        stack = Stack(
            mariadb_url=mariadb_url,
            redis_url=redis_url,
            kafka_bootstrap=kafka_bootstrap,
            logs=self._logs,
            redis_db=REDIS_DB,
        )
        self.started.append(stack)
        started = time.monotonic()
        await asyncio.to_thread(stack.up, relays=relays, projectors=projectors)
        print(f"\n  stack up in {time.monotonic() - started:.1f}s", end="")
        return stack


@pytest.fixture
def stacks(
    mariadb_url: str, redis_url: str, kafka_bootstrap: str, tmp_path: Path
) -> Iterator[Stacks]:
    made = Stacks(mariadb_url, redis_url, kafka_bootstrap, tmp_path)
    try:
        yield made
    finally:
        for stack in made.started:
            stack.down()


@dataclass
class Shop:
    """One stack seen from outside: its API over HTTP (tokens included), its database, its
    Redis gate, its topics."""

    stack: Stack
    api: HttpApi

    @property
    def engine(self) -> AsyncEngine:
        return self.api.engine

    @property
    def prefix(self) -> str:
        return self.stack.env["FLASHORDER_KAFKA_TOPIC_PREFIX"]

    async def add_product(self, stock: int) -> str:
        return await new_product(self.api, stock=stock, price=PRICE)

    async def place(self, user: str, key: str, *lines: tuple[str, int, int]) -> Reply:
        return await place(self.api, user, *lines, key=key)

    async def cancel(self, user: str, order_id: str) -> Reply:
        path = f"/api/v1/orders/{order_id}/cancel"
        return await self.api.call("POST", path, token=self.api.token(user))

    async def count(self, sql: str) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(text(sql))).scalar_one())


@asynccontextmanager
async def shop_of(stack: Stack) -> AsyncIterator[Shop]:
    engine = make_engine(stack.database_url, pool_size=5)
    redis = Redis.from_url(stack.redis_url)
    # The 2,000 buyers of a burst queue for these connections in the client rather than inside
    # two API workers on two cores, where they would run into the request deadline.
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    # No total: a burst's requests queue for the connector's slots, which is not the server's time.
    timeout = aiohttp.ClientTimeout(sock_connect=10, sock_read=60)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            yield Shop(stack, HttpApi(session, stack.base, engine, RedisStockGate(redis)))
    finally:
        await redis.aclose()
        await engine.dispose()


# --- bursts -------------------------------------------------------------------------------------


@dataclass
class Burst:
    """What a burst got back; ``answered`` grows while it runs, for tests that act mid-burst."""

    answered_at: dict[str, float] = field(default_factory=dict)  # order id -> its 201's time
    took: list[float] = field(default_factory=list)  # each accepted order's request, retries too
    cancelled: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)  # final answers
    retried: int = 0  # 503s and dropped connections, answered by a retry
    answered: int = 0
    #: Every attempt's answer, by user: the story behind an order the client never saw.
    attempts: dict[str, list[str]] = field(default_factory=dict)

    def merge(self, other: Burst) -> Burst:
        return Burst(
            answered_at={**self.answered_at, **other.answered_at},
            took=self.took + other.took,
            cancelled=self.cancelled | other.cancelled,
            statuses=self.statuses + other.statuses,
            retried=self.retried + other.retried,
            answered=self.answered + other.answered,
            attempts={**self.attempts, **other.attempts},
        )


def _kind(reply: Reply) -> str:
    body = reply.body if isinstance(reply.body, dict) else {}
    return str(body.get("type", body.get("status", ""))).rsplit(":", 1)[-1]


def _try_again(reply: Reply) -> bool:
    # 503: overloaded, or a deadline passed with the outcome unknown. 409 duplicate-in-flight:
    # the first attempt of a retried request (its connection dropped) is still running.
    return reply.status == 503 or (reply.status == 409 and reply.body.get("type") == IN_FLIGHT)


async def burst(
    shop: Shop,
    products: Sequence[str],
    orders: int,
    *,
    concurrency: int | None = None,
    cancel_every: int = 10,
    into: Burst | None = None,
) -> Burst:
    """``orders`` buyers at once (or ``concurrency`` at a time), each of one or two products,
    one or two units each; every ``cancel_every``-th accepted order is cancelled at once.

    Buyers behave as the API asks clients to: a 503 (overload, or a deadline whose outcome is
    unknown), a dropped connection or a 409 duplicate-in-flight is retried with the same
    Idempotency-Key, so a retry of an order that did commit gets that order back rather than
    a second one.
    """
    got = into if into is not None else Burst()
    rng = random.Random()
    gate = asyncio.Semaphore(concurrency or orders)

    async def retried(user: str, call: Callable[[], Awaitable[Reply]]) -> Reply:
        seen = got.attempts.setdefault(user, [])
        give_up = time.monotonic() + RETRY_FOR
        while True:
            try:
                reply = await call()
                seen.append(f"{reply.status} {_kind(reply)}")
            except aiohttp.ClientConnectionError as exc:
                # A connection dropped under the request (an idle keep-alive connection the
                # server closed as the request went out, a reset): it may or may not have
                # arrived, and the key makes the retry safe either way.
                seen.append(type(exc).__name__)
                if time.monotonic() > give_up:
                    raise
                pause = 0.2
            else:
                if not _try_again(reply) or time.monotonic() > give_up:
                    return reply
                pause = float(reply.headers.get("Retry-After", "0.5"))
            got.retried += 1
            await asyncio.sleep(pause)

    async def buyer(n: int) -> None:
        user, key = rid("u"), rid("key")
        lines = [(pid, rng.randint(1, 2), PRICE) for pid in rng.sample(products, rng.randint(1, 2))]
        async with gate:
            sent = time.time()
            reply = await retried(user, lambda: shop.place(user, key, *lines))
            got.answered += 1
            got.statuses[reply.status] += 1
            if reply.status not in (200, 201):
                assert reply.status == 409, (reply.body, got.attempts[user])
                assert reply.body["type"] == SOLD_OUT, (reply.body, got.attempts[user])
                return
            order_id = reply.body["orderId"]
            got.answered_at[order_id] = time.time()
            got.took.append(got.answered_at[order_id] - sent)
            if n % cancel_every == 0:
                cancelled = await retried(user, lambda: shop.cancel(user, order_id))
                assert cancelled.status == 200, cancelled.body
                got.cancelled.add(order_id)

    async with asyncio.TaskGroup() as tasks:
        for n in range(orders):
            tasks.create_task(buyer(n))
    return got


@asynccontextmanager
async def running_burst(
    shop: Shop, products: Sequence[str], orders: int, got: Burst
) -> AsyncIterator[asyncio.Task[Burst]]:
    """A burst of ``orders``, 20 at a time, in the background while the body disturbs the
    stack; the body awaits it (a failure leaves it cancelled, not pending)."""
    task = asyncio.create_task(burst(shop, products, orders, concurrency=20, into=got))
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(
    condition: Callable[[], Awaitable[bool]], *, timeout: float = 60.0, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


async def settle(
    shop: Shop,
    products: Sequence[str],
    got: Burst,
    *,
    redelivery_allowed: bool = False,
    timeout: float = 90.0,
) -> EventFigures:
    """The proof every stack test ends with."""
    started = time.monotonic()
    assert got.statuses[201] > 0, got.statuses
    assert set(got.statuses) <= {200, 201, 409}, got.statuses
    await check_stock(shop.engine, shop.api.gate, products)
    written = await wait_converged(shop.api, timeout=timeout)
    converged = time.monotonic() - started
    unseen = {oid: o.user_id for oid, o in written.orders.items() if oid not in got.answered_at}
    assert not unseen, "orders the client was never told of: " + ", ".join(
        f"{oid} after {got.attempts.get(user)}" for oid, user in list(unseen.items())[:5]
    )
    assert written.orders.keys() == got.answered_at.keys(), "the database holds the 201s only"
    assert written.cancelled == got.cancelled
    events = await published(shop.stack.env["FLASHORDER_KAFKA_BOOTSTRAP"], shop.prefix)
    figures = check_events(events, written, redelivery_allowed=redelivery_allowed)
    assert figures.created == len(got.answered_at)
    print(
        f"\n  answers {dict(got.statuses)}, retried {got.retried}; converged in {converged:.1f}s,"
        f" checked in {time.monotonic() - started:.1f}s: {figures}"
    )
    return figures


async def kafka(action: str, *, own: DrillServices) -> None:
    """``scripts/services.sh ACTION kafka`` on the test's own broker (``own_kafka``)."""
    proc = await asyncio.create_subprocess_exec(
        str(SERVICES),
        action,
        "kafka",
        env=own.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(240):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()


@pytest.fixture
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DrillServices]:
    """A Kafka broker of the test's own, on free ports: stopping it takes down nothing that
    the rest of the suite uses (the shared broker serves the session's stacks)."""
    own = DrillServices(
        folder=tmp_path_factory.mktemp("own-kafka"),
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
    )
    # The broker's jars are the suite's (the same pom): linked, not fetched again with Maven.
    shared = Path(os.environ.get("FLASHORDER_SERVICES_DIR", SERVICES.parents[1] / ".services"))
    if (shared / "kafka" / "libs" / ".pom.sha256").is_file():
        (own.folder / "kafka").mkdir()
        (own.folder / "kafka" / "libs").symlink_to(shared / "kafka" / "libs")
    try:
        own.run("up", "kafka")
        yield own
    finally:
        own.run("down", "kafka")


# --- the tests ----------------------------------------------------------------------------------


async def test_a_burst_of_orders_publishes_each_committed_change_once_and_the_read_model_converges(
    stacks: Stacks,
) -> None:
    stack = await stacks.up()
    async with shop_of(stack) as shop:
        # One product never sells out; three do, so some orders are refused.
        products = [await shop.add_product(stock) for stock in (3000, 600, 300, 100)]

        started = time.monotonic()
        got = await burst(shop, products, 2000)
        took = time.monotonic() - started

        assert got.statuses[409] > 0, "a product sold out"
        await settle(shop, products, got)
        lag = await read_lag(shop.engine, got.answered_at)
    print(
        f"  2000 orders in {took:.1f}s; an accepted order's wait in the client (queued for a"
        f" connection, retries included): {latency(got.took)}\n"
        f"  commit -> read model under the burst:\n{lag}"
    )


@pytest.mark.drill
async def test_orders_are_accepted_while_kafka_is_down_and_their_events_arrive_after(
    mariadb_url: str, redis_url: str, own_kafka: DrillServices, tmp_path: Path
) -> None:
    stacks = Stacks(mariadb_url, redis_url, own_kafka.kafka_bootstrap, tmp_path)
    try:
        await kafka_outage(stacks, own_kafka)
    finally:
        for stack in stacks.started:
            await asyncio.to_thread(stack.down)


async def kafka_outage(stacks: Stacks, own_kafka: DrillServices) -> None:
    stack = await stacks.up()
    async with shop_of(stack) as shop:
        products = [await shop.add_product(stock) for stock in (600, 150)]
        first = Burst()
        try:
            async with running_burst(shop, products, 250, first) as running:
                await kafka("down", own=own_kafka)
                # Wholly while the broker is down: the API does not need it.
                during = await burst(shop, products, 250)
                await running
            assert during.statuses[201] > 0, during.statuses
            waiting = await shop.count("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
            assert waiting >= len(during.answered_at), "events wait in the outbox"
        finally:
            await kafka("up", own=own_kafka)
        # Redelivery is possible: a batch the broker stored but never acknowledged is sent again.
        await settle(shop, products, first.merge(during), redelivery_allowed=True, timeout=150)


async def test_two_relays_and_two_projectors_publish_and_apply_each_event_once(
    stacks: Stacks,
) -> None:
    stack = await stacks.up(relays=2, projectors=2)
    async with shop_of(stack) as shop:
        products = [await shop.add_product(stock) for stock in (800, 200)]

        got = await burst(shop, products, 600)

        await settle(shop, products, got, redelivery_allowed=False)
        reporting = await shop.count(
            "SELECT COUNT(*) FROM projector_status WHERE applied_total > 0"
        )
        assert reporting == 2, "both projectors applied events"


async def test_a_projector_killed_mid_burst_resumes_without_loss_or_double_counting(
    stacks: Stacks,
) -> None:
    stack = await stacks.up()
    async with shop_of(stack) as shop:
        products = [await shop.add_product(stock) for stock in (800, 200)]
        got = Burst()
        async with running_burst(shop, products, 500, got) as running:

            async def applied_some() -> bool:
                return await shop.count("SELECT COUNT(*) FROM processed_events") >= 50

            await until(applied_some, what="the projector to apply events")
            await asyncio.to_thread(stack.kill, "projector")
            killed_at = got.answered
            assert killed_at < 500, "the projector died mid-burst"

            async def more_orders() -> bool:
                return running.done() or got.answered >= killed_at + 100

            await until(more_orders, what="orders while no projector runs")
            stack.start("projector")
            await running

        await settle(shop, products, got)


async def test_a_relay_killed_mid_burst_resumes_without_loss_or_double_counting(
    stacks: Stacks,
) -> None:
    stack = await stacks.up()
    async with shop_of(stack) as shop:
        products = [await shop.add_product(stock) for stock in (800, 200)]
        got = Burst()
        async with running_burst(shop, products, 500, got) as running:

            async def published_some() -> bool:
                sql = "SELECT COUNT(*) FROM outbox WHERE published_at IS NOT NULL"
                return await shop.count(sql) >= 50

            await until(published_some, what="the relay to publish events")
            await asyncio.to_thread(stack.kill, "relay")
            killed_at = got.answered
            assert killed_at < 500, "the relay died mid-burst"

            async def more_orders() -> bool:
                return running.done() or got.answered >= killed_at + 100

            await until(more_orders, what="orders while no relay runs")
            stack.start("relay")
            await running

        # A relay killed between the broker's ack and its own commit publishes again.
        await settle(shop, products, got, redelivery_allowed=True)


# --- in process, no stack: real MariaDB and Redis adapters, a scripted unit of work ------------


class Injected(errors.Unavailable):
    def __init__(self) -> None:
        super().__init__("database", "injected failure")


class _FailingOrders:
    """The real order repository, except that ``add`` fails."""

    def __init__(self, inner: OrderRepository) -> None:
        self._inner = inner

    async def add(self, order: Order) -> None:
        raise Injected()

    async def add_many(self, orders: Sequence[Order]) -> None:
        raise Injected()

    async def get(self, order_id: OrderId, *, for_update: bool = False) -> Order | None:
        return await self._inner.get(order_id, for_update=for_update)

    async def save(self, order: Order) -> bool:
        return await self._inner.save(order)

    async def due(self, at: datetime, limit: int) -> list[Order]:
        return await self._inner.due(at, limit)


class ScriptedUnitOfWork:
    """A real unit of work on MariaDB that fails at ``fail_at``: ``orders.add`` (before any
    write) or ``commit`` (after every write of the order: items, stock, outbox row); or that
    takes ``commit_delay`` seconds longer to commit."""

    def __init__(self, inner: SqlUnitOfWork, fail_at: str | None, commit_delay: float) -> None:
        self._inner = inner
        self._fail_at = fail_at
        self._commit_delay = commit_delay
        self.products = inner.products
        self.orders: OrderRepository = (
            _FailingOrders(inner.orders) if fail_at == "orders.add" else inner.orders
        )
        self.purchases = inner.purchases
        self.idempotency = inner.idempotency
        self.discounts = inner.discounts
        self.payments = inner.payments
        self.record = inner.record

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)

    async def commit(self) -> None:
        if self._fail_at == "commit":
            raise Injected()  # not committed: leaving the block rolls back
        await asyncio.sleep(self._commit_delay)
        await self._inner.commit()


class ScriptedUnitOfWorkFactory:
    def __init__(
        self, inner: SqlUnitOfWorkFactory, *, fail_at: str | None = None, commit_delay: float = 0
    ) -> None:
        self._inner = inner
        self._fail_at = fail_at
        self._commit_delay = commit_delay

    def __call__(self) -> ScriptedUnitOfWork:
        return ScriptedUnitOfWork(self._inner(), self._fail_at, self._commit_delay)


class RecordingPublisher:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, events: Sequence[Event]) -> None:
        self.events.extend(events)


@dataclass
class InProcess:
    """The command side's real adapters, without a server: handlers are called directly."""

    engine: AsyncEngine
    redis: Redis
    prefix: str  # this test's Redis keys
    deps: Deps

    def with_uow(
        self, uow: ScriptedUnitOfWorkFactory, *, group_commit: bool
    ) -> AbstractAsyncContextManager[Deps]:
        """These deps with ``uow`` for every transaction, and for the group commit writer."""
        return reserving(
            uow=uow,
            stock=self.deps.stock,
            locks=self.deps.locks,
            idempotency=self.deps.idempotency,
            batching=group_commit,
        )

    async def new_product(self, stock: int) -> ProductId:
        pid = ProductId(rid("PRD"))
        cmd = commands.CreateProduct(pid, "flash item", PRICE, stock=stock)
        await handlers.create_product(cmd, deps=self.deps)
        return pid

    async def count(self, sql: str) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(text(sql))).scalar_one())


@pytest.fixture
def mariadb_database(mariadb_url: str, tmp_path: Path) -> Iterator[str]:
    with migrated_database("mariadb", folder=tmp_path, mariadb_url=mariadb_url) as url:
        yield url


@pytest.fixture
async def in_process(mariadb_database: str, redis_url: str) -> AsyncIterator[InProcess]:
    engine = make_engine(mariadb_database, pool_size=5)
    redis = Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}")
    prefix = rid("t")
    locks = RedisLocks(redis, prefix=prefix)
    try:
        async with reserving(
            uow=SqlUnitOfWorkFactory(engine),
            stock=RedisStockGate(redis, prefix=prefix),
            locks=locks,
            idempotency=RedisIdempotencyCache(redis, prefix=prefix),
        ) as deps:
            yield InProcess(engine, redis, prefix, deps)
    finally:
        await locks.close()
        await redis.aclose()
        await engine.dispose()


def order_of(pid: ProductId, quantity: int) -> commands.PlaceOrder:
    return commands.PlaceOrder(
        user_id=UserId(rid("u")),
        lines=(RequestedLine(pid, quantity, PRICE),),
        discount_policy_id=None,
        discount_amount=None,
        delivery_fee=0,
        payment_amount=quantity * PRICE,
        payment_type=PaymentType.CREDIT,
        idempotency_key=rid("key"),
    )


@pytest.mark.parametrize("group_commit", [False, True], ids=["own-transaction", "group-commit"])
@pytest.mark.parametrize("fail_at", ["orders.add", "commit"])
async def test_an_order_whose_transaction_fails_publishes_nothing_and_leaves_stock_whole(
    in_process: InProcess, fail_at: str, group_commit: bool
) -> None:
    real = in_process.deps
    pid = await in_process.new_product(stock=5)
    cmd = order_of(pid, 2)
    async with in_process.with_uow(
        ScriptedUnitOfWorkFactory(SqlUnitOfWorkFactory(in_process.engine), fail_at=fail_at),
        group_commit=group_commit,
    ) as failing:
        with pytest.raises(Injected):
            await handlers.place_order(cmd, deps=failing)

    assert await in_process.count("SELECT COUNT(*) FROM orders") == 0
    assert await in_process.count("SELECT COUNT(*) FROM order_items") == 0
    assert await in_process.count("SELECT COUNT(*) FROM outbox WHERE type <> 'stock.changed'") == 0
    assert await real.stock.available(pid) == 5, "the reservation went back"
    assert await real.stock.pending(0) == [], "no reservation left in flight"
    figures = await check_stock(in_process.engine, real.stock, [pid])
    assert figures[pid] == {"stock": 5, "available": 5, "sold": 0}
    relayed = RecordingPublisher()
    await relay_once(SqlOutboxRelayStore(in_process.engine), relayed, batch_size=100)
    assert [e.type for e in relayed.events] == [STOCK_CHANGED], "only the product's creation"

    # Nothing was left held (user lock, key, reservation): the same request goes through now.
    placed = await handlers.place_order(cmd, deps=real)
    assert placed.status_code == 201
    assert not placed.replayed
    await relay_once(SqlOutboxRelayStore(in_process.engine), relayed, batch_size=100)
    assert [e.type for e in relayed.events] == [STOCK_CHANGED, ORDER_CREATED]
    assert relayed.events[1].aggregate_id == placed.body["orderId"]
    figures = await check_stock(in_process.engine, real.stock, [pid])
    assert figures[pid] == {"stock": 5, "available": 3, "sold": 2}


async def test_a_retry_of_an_order_committed_after_its_caller_gave_up_gets_that_order(
    in_process: InProcess,
) -> None:
    # The API's deadline cancels a request whose batch is still committing; the client is
    # told to retry with the same key. The batch commits and takes the last unit: the retry
    # must get that order back, not "sold out".
    pid = await in_process.new_product(stock=1)
    cmd = order_of(pid, 1)
    async with in_process.with_uow(
        ScriptedUnitOfWorkFactory(SqlUnitOfWorkFactory(in_process.engine), commit_delay=1.0),
        group_commit=True,
    ) as slow:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await handlers.place_order(cmd, deps=slow)

        async def committed() -> bool:
            return await in_process.count("SELECT COUNT(*) FROM orders") == 1

        await until(committed, timeout=10, what="the batch to commit")
        for _ in range(100):
            try:
                retry = await handlers.place_order(cmd, deps=in_process.deps)
                break
            except errors.DuplicateInFlight:
                await asyncio.sleep(0.05)  # the batch's outcome is being recorded

    async with in_process.engine.connect() as conn:
        order_id = (await conn.execute(text("SELECT order_id FROM orders"))).scalar_one()
    assert retry.replayed
    assert retry.body["orderId"] == order_id
    figures = await check_stock(in_process.engine, in_process.deps.stock, [pid])
    assert figures[pid] == {"stock": 1, "available": 0, "sold": 1}
