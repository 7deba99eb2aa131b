"""The life of an order on real MariaDB and Redis, under races: payments at the deadline,
one payment event delivered many times, two expirers, pay against cancel, and an expiry
while Redis restarts empty. Every race ends with the invariants checked on the stores."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import secrets
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.idempotency.redis import RedisIdempotencyCache
from flashorder.adapters.locks.redis import RedisLocks
from flashorder.adapters.sql.engine import make_engine
from flashorder.adapters.sql.uow import SqlUnitOfWorkFactory
from flashorder.adapters.stock.redis import RedisStockGate
from flashorder.application import handlers
from flashorder.application.expiry import Expirer
from flashorder.application.handlers import Deps
from flashorder.application.payments import PaymentAnswer, record_payment
from flashorder.application.reconcile import reconcile
from flashorder.domain import commands, errors
from flashorder.domain.model import OrderId, PaymentStatus, PaymentType, ProductId, UserId
from flashorder.domain.pricing import RequestedLine
from flashorder_bench.stack import free_port
from tests.invariants import check_stock, check_transitions, units
from tests.support.deps import reserving

pytestmark = pytest.mark.services

PRICE = 100


@dataclasses.dataclass
class World:
    engine: AsyncEngine
    redis: Redis
    prefix: str
    gate: RedisStockGate
    deps: Deps

    def expirer(self, *, engine: AsyncEngine | None = None, batch: int = 50) -> Expirer:
        """An expirer; with an engine of its own it is another process as far as the
        database can tell (its own connections, its own transactions)."""
        deps = (
            self.deps
            if engine is None
            else dataclasses.replace(self.deps, uow=SqlUnitOfWorkFactory(engine))
        )
        return Expirer(deps, batch_size=batch)

    async def statuses(self, order_ids: list[str]) -> Counter[str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT order_id, status FROM orders"),
            )
            found = {r.order_id: r.status for r in rows}
        return Counter(found[oid] for oid in order_ids)


@asynccontextmanager
async def world_on(engine: AsyncEngine, redis: Redis, prefix: str) -> AsyncIterator[World]:
    gate = RedisStockGate(redis, prefix=prefix)
    locks = RedisLocks(redis, prefix=prefix)
    try:
        # Orders go the way they go in production: reserved, then written in group commits.
        async with reserving(
            uow=SqlUnitOfWorkFactory(engine),
            stock=gate,
            locks=locks,
            idempotency=RedisIdempotencyCache(redis, prefix=prefix),
            batching=True,
        ) as deps:
            yield World(engine, redis, prefix, gate, deps)
    finally:
        await locks.close()


@pytest.fixture
async def world(mariadb_database: str, redis_url: str) -> AsyncIterator[World]:
    # Room for every request of a race: a pool timeout would be the test's, not a finding.
    engine = make_engine(mariadb_database, pool_size=150)
    redis = Redis.from_pool(
        BlockingConnectionPool.from_url(redis_url, max_connections=200, timeout=10)
    )
    prefix = f"lc-{secrets.token_hex(6)}"
    try:
        async with world_on(engine, redis, prefix) as built:
            yield built
    finally:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await engine.dispose()


def rid(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


async def new_product(world: World, *, stock: int, pay_within: int) -> ProductId:
    pid = ProductId(rid("PRD"))
    await handlers.create_product(
        commands.CreateProduct(pid, "item", PRICE, stock=stock, pay_within_seconds=pay_within),
        deps=world.deps,
    )
    return pid


async def place(world: World, pid: ProductId) -> str:
    placed = await handlers.place_order(
        commands.PlaceOrder(
            user_id=UserId(rid("u")),
            lines=(RequestedLine(pid, 1, PRICE),),
            discount_policy_id=None,
            discount_amount=None,
            delivery_fee=0,
            payment_amount=PRICE,
            payment_type=PaymentType.CREDIT,
        ),
        deps=world.deps,
    )
    assert placed.status_code == 201, placed.body
    return str(placed.body["orderId"])


async def place_many(world: World, pid: ProductId, n: int) -> dict[str, datetime]:
    """``n`` orders at once; returns each one's deadline."""
    order_ids = await asyncio.gather(*(place(world, pid) for _ in range(n)))
    async with world.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT order_id, pay_by FROM orders WHERE order_id IN :ids").bindparams(
                bindparam("ids", expanding=True)
            ),
            {"ids": list(order_ids)},
        )
        # Raw SQL skips the UtcDateTime type: naive UTC comes back.
        return {r.order_id: r.pay_by.replace(tzinfo=UTC) for r in rows}


async def pay(
    world: World,
    order_id: str,
    *,
    ref: str | None = None,
    status: PaymentStatus = PaymentStatus.SUCCEEDED,
    deps: Deps | None = None,
) -> PaymentAnswer:
    cmd = commands.RecordPayment(ref or rid("evt"), OrderId(order_id), PRICE, status)
    return await record_payment(cmd, deps=deps or world.deps)


async def sleep_until(deadline: datetime, deps: Deps) -> None:
    await asyncio.sleep(max(0.0, (deadline - deps.clock()).total_seconds()))


# --- the races ---------------------------------------------------------------------------------


async def test_payments_landing_at_the_deadline_end_each_order_paid_or_expired_never_both(
    world: World, mariadb_database: str
) -> None:
    n = 300
    pid = await new_product(world, stock=n, pay_within=3)
    deadlines = await place_many(world, pid, n)
    order_ids = list(deadlines)
    other_engine = make_engine(mariadb_database, pool_size=10)
    expirers = [world.expirer(), world.expirer(engine=other_engine)]
    stop = asyncio.Event()

    async def expire_until_stopped(expirer: Expirer) -> None:
        while not stop.is_set():
            await expirer.run_once()
            await asyncio.sleep(0.01)

    async def pay_around_the_deadline(order_id: str) -> PaymentAnswer:
        # Within 0.3 s of the order's own deadline, either side: many land at it.
        jitter = timedelta(seconds=random.uniform(-0.3, 0.3))
        await sleep_until(deadlines[order_id] + jitter, world.deps)
        return await pay(world, order_id)

    try:
        running = [asyncio.create_task(expire_until_stopped(e)) for e in expirers]
        answers = await asyncio.gather(*(pay_around_the_deadline(o) for o in order_ids))
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*running)
        await expirers[0].run_once()
    finally:
        await other_engine.dispose()

    outcome = {str(a.record.order_id): a.record.outcome.value for a in answers}
    statuses = await world.statuses(order_ids)
    assert sum(statuses.values()) == n
    assert set(statuses) <= {"PAID", "EXPIRED"}, statuses
    print(f"at the deadline: {statuses['PAID']} paid, {statuses['EXPIRED']} expired")
    final = await check_transitions(world.engine, order_ids)
    for order_id in order_ids:
        # Paid exactly when its payment says so; an expired order's payment is a refund.
        assert {"PAID": "paid", "EXPIRED": "refund-due"}[final[order_id]] == outcome[order_id]
    assert sum(e.expired_total for e in expirers) == statuses["EXPIRED"]
    figures = await check_stock(world.engine, world.gate, [pid])
    assert (await units(world.engine, pid)).get("PAID", 0) == statuses["PAID"]
    assert figures[pid]["available"] == statuses["EXPIRED"]
    # The expired units are on sale again, and sell.
    again = await asyncio.gather(*(place(world, pid) for _ in range(statuses["EXPIRED"])))
    assert len(set(again)) == statuses["EXPIRED"]
    with pytest.raises(errors.SoldOut):
        await place(world, pid)
    await check_stock(world.engine, world.gate, [pid])


async def test_one_payment_event_delivered_twenty_times_at_once_pays_once(world: World) -> None:
    pid = await new_product(world, stock=5, pay_within=60)
    order_id = await place(world, pid)
    ref = rid("evt")

    answers = await asyncio.gather(*(pay(world, order_id, ref=ref) for _ in range(20)))

    assert Counter(a.replayed for a in answers) == {True: 19, False: 1}
    assert {(a.record.outcome.value, a.record.order_status.value) for a in answers} == {
        ("paid", "PAID")
    }
    # Days later, the same: the recorded answer, nothing changed.
    again = await pay(world, order_id, ref=ref)
    assert again.replayed
    assert again.record.outcome.value == "paid"
    async with world.engine.connect() as conn:
        paid_events = (
            await conn.execute(
                text("SELECT COUNT(*) FROM outbox WHERE type = 'order.paid' AND aggregate_id = :o"),
                {"o": order_id},
            )
        ).scalar_one()
    assert paid_events == 1
    assert (await check_transitions(world.engine, [order_id]))[order_id] == "PAID"
    await check_stock(world.engine, world.gate, [pid])


async def test_a_late_payment_delivered_twenty_times_announces_one_refund(world: World) -> None:
    pid = await new_product(world, stock=5, pay_within=1)
    order_id = await place(world, pid)
    await asyncio.sleep(1.1)
    # Other tests' due orders (the module shares its database) may expire along with it.
    assert OrderId(order_id) in await world.expirer().run_once()

    answers = await asyncio.gather(
        *(pay(world, order_id, ref="late-" + order_id) for _ in range(20))
    )

    assert {(a.record.outcome.value, a.record.order_status.value) for a in answers} == {
        ("refund-due", "EXPIRED")
    }
    assert (await check_transitions(world.engine, [order_id]))[order_id] == "EXPIRED"
    figures = await check_stock(world.engine, world.gate, [pid])
    assert figures[pid]["available"] == 5


async def test_two_expirers_at_once_expire_each_order_once(
    world: World, mariadb_database: str
) -> None:
    n = 200
    pid = await new_product(world, stock=n, pay_within=1)
    deadlines = await place_many(world, pid, n)
    order_ids = list(deadlines)
    other_engine = make_engine(mariadb_database, pool_size=10)
    try:
        await sleep_until(max(deadlines.values()), world.deps)
        first, second = world.expirer(batch=20), world.expirer(engine=other_engine, batch=20)
        mine, theirs = await asyncio.gather(first.run_once(), second.run_once())
    finally:
        await other_engine.dispose()

    assert not set(mine) & set(theirs), "an order expired by both"
    # The database is the module's: other tests' due orders may be expired here too.
    assert sorted(o for o in mine + theirs if o in deadlines) == sorted(order_ids)
    # SKIP LOCKED shares the work: each expirer took some.
    assert mine
    assert theirs
    assert (await world.statuses(order_ids)) == {"EXPIRED": n}
    await check_transitions(world.engine, order_ids)
    figures = await check_stock(world.engine, world.gate, [pid])
    assert figures[pid]["available"] == n


async def test_pay_against_cancel_one_wins_and_one_refund_is_announced(world: World) -> None:
    n = 100
    pid = await new_product(world, stock=n, pay_within=60)
    order_ids = list(await place_many(world, pid, n))

    async def race(order_id: str) -> None:
        cancel = handlers.cancel_order(commands.CancelOrder(OrderId(order_id)), deps=world.deps)
        await asyncio.gather(pay(world, order_id), cancel)

    await asyncio.gather(*(race(order_id) for order_id in order_ids))

    # Pay first: PAID, then the cancel refunds it; cancel first: the payment comes too late.
    # Either way the order ends cancelled, with its units back and one refund announced.
    assert (await world.statuses(order_ids)) == {"CANCELLED": n}
    await check_transitions(world.engine, order_ids)
    async with world.engine.connect() as conn:
        refunds = Counter(
            r.aggregate_id
            for r in await conn.execute(
                text("SELECT aggregate_id FROM outbox WHERE type = 'payment.refund_due'")
            )
        )
    assert all(refunds[order_id] == 1 for order_id in order_ids), refunds
    figures = await check_stock(world.engine, world.gate, [pid])
    assert figures[pid]["available"] == n


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class RedisServer:
    """A Redis server of this test's own, which it may restart empty."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port = port
        self.folder = folder
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ping = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, check=False
            )
            if ping.stdout.strip() == b"PONG":
                return
            time.sleep(0.05)
        raise TimeoutError(f"redis-server on {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart_empty(self) -> None:
        self.stop()
        self.start()


async def test_an_expiry_while_redis_restarts_empty_is_put_right_by_reconciliation(
    mariadb_database: str, own_redis: RedisServer
) -> None:
    engine = make_engine(mariadb_database, pool_size=20)
    redis = Redis.from_url(own_redis.url)
    try:
        async with world_on(engine, redis, "fo") as world:
            await expire_across_a_restart(world, engine, redis, own_redis)
    finally:
        await redis.aclose()
        await engine.dispose()


async def expire_across_a_restart(
    world: World, engine: AsyncEngine, redis: Redis, own_redis: RedisServer
) -> None:
    pid = await new_product(world, stock=10, pay_within=2)
    old = [await place(world, pid) for _ in range(4)]
    await asyncio.to_thread(own_redis.restart_empty)
    # The first order after the restart primes the gate from the database: the four
    # held units are not on the shelf, so the gate starts at 5 after this order's.
    await redis.connection_pool.disconnect()
    fresh = await place(world, pid)
    assert await world.gate.available(pid) == 5
    await asyncio.sleep(2.1)

    expired = await world.expirer().run_once()

    # The database is the module's: other tests' due orders may be expired here too.
    mine = [*old, fresh]
    assert sorted(o for o in expired if o in mine) == sorted(mine)
    # The database has every unit back; the gate only the fresh order's (the old
    # reservations died with Redis): it trails by four until reconciliation.
    assert await world.gate.available(pid) == 6
    report = await reconcile(
        uow=world.deps.uow, stock=world.gate, locks=world.deps.locks, older_than=600
    )
    assert [(f.before, f.after) for f in report.fixed if f.product_id == pid] == [(6, 10)]
    await check_transitions(engine, [*old, fresh])
    figures = await check_stock(engine, world.gate, [pid])
    assert figures[pid]["available"] == 10
    # Sold again: all ten.
    for _ in range(10):
        await place(world, pid)
    await check_stock(engine, world.gate, [pid])
