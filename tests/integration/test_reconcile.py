"""Reconciliation on real MariaDB and Redis: each fault that makes the gate and the database
disagree, repaired; and a race of orders against reconciliation runs, which must neither
oversell nor change anything (orders alone never create drift)."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping

import pytest
from redis.asyncio import Redis
from sqlalchemy import text

from flashorder.adapters.stock.redis import RedisStockGate
from flashorder.application import handlers
from flashorder.application.handlers import Deps
from flashorder.application.ports import GateCorrection, ReservationLine
from flashorder.application.reconcile import (
    ProductFix,
    ReconcileReport,
    reconcile,
    run_reconciler,
)
from flashorder.domain import commands, errors
from flashorder.domain.model import OrderId, ProductId, UserId
from tests.invariants import check_stock
from tests.support.command_side import CommandSide, command_side, order
from tests.support.deps import reserving

pytestmark = pytest.mark.services


@dataclasses.dataclass
class World(CommandSide):
    """The command side, and reconciliation and SQL at hand."""

    async def run(self, *, older_than: float = 600.0, dry_run: bool = False) -> ReconcileReport:
        return await reconcile(
            uow=self.deps.uow,
            stock=self.gate,
            locks=self.deps.locks,
            older_than=older_than,
            dry_run=dry_run,
        )

    async def sql(self, statement: str, **params: object) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(text(statement), params)


@pytest.fixture
async def world(mariadb_database: str, redis_url: str) -> AsyncIterator[World]:
    # Room for every one of a race's 300 orders: a pool timeout would be the test's, not a finding.
    prefix = f"rc-{secrets.token_hex(6)}"
    async with command_side(mariadb_database, redis_url, prefix=prefix, connections=200) as side:
        yield World(side.engine, side.redis, side.prefix, side.gate, side.deps)


def rid(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


async def place(
    world: World, user: str, pid: ProductId, quantity: int = 1, *, deps: Deps | None = None
) -> str:
    try:
        placed = await handlers.place_order(order(user, pid, quantity), deps=deps or world.deps)
    except errors.Conflict as exc:
        return type(exc).__name__
    return str(placed.body["orderId"])


def fixes(report: ReconcileReport, pid: ProductId) -> list[ProductFix]:
    """The repairs of one product (the database is shared by this module's tests)."""
    return [fix for fix in report.fixed if fix.product_id == pid]


def fixed(report: ReconcileReport, pid: ProductId) -> tuple[int | None, int]:
    (fix,) = fixes(report, pid)
    return fix.before, fix.after


# --- the faults, one at a time ----------------------------------------------------------------


async def test_after_redis_lost_its_data_the_counts_are_rebuilt_from_the_database(
    world: World,
) -> None:
    pid = await world.new_product(stock=10, max_per_user=2)
    buyer = rid("u")
    for who in (buyer, buyer, rid("u")):
        await place(world, who, pid)
    await world.lose_redis_data()

    report = await world.run()

    assert fixed(report, pid) == (None, 7)
    assert [f.users_rebuilt for f in fixes(report, pid)] == [2]
    await check_stock(world.engine, world.gate, [pid])
    # The per-user count came back too: the buyer's limit holds at the gate again.
    with pytest.raises(errors.LimitReached):
        await world.gate.reserve(OrderId(rid("o")), UserId(buyer), [ReservationLine(pid, 1, 2)])


async def test_a_reservation_whose_worker_died_before_the_commit_is_released(
    world: World,
) -> None:
    pid = await world.new_product(stock=10)
    await place(world, rid("u"), pid)
    # A worker reserved, then was killed before its transaction: no order in the database.
    orphan = OrderId(rid("o"))
    await world.gate.reserve(orphan, UserId(rid("u")), [ReservationLine(pid, 3, None)])
    assert await world.gate.available(pid) == 6

    young = await world.run(older_than=60)
    await asyncio.sleep(0.3)
    old = await world.run(older_than=0.2)

    assert young.released == []
    assert old.released == [orphan]
    assert fixes(old, pid) == []
    assert await world.gate.available(pid) == 9
    await check_stock(world.engine, world.gate, [pid])


async def test_a_reservation_whose_worker_died_after_the_commit_is_confirmed(
    world: World,
) -> None:
    pid = await world.new_product(stock=10)
    # The worker committed the order, then died before it could confirm the reservation.
    async with reserving(
        uow=world.deps.uow,
        stock=ForgetsToConfirm(world.redis, prefix=world.prefix),
        locks=world.deps.locks,
        idempotency=world.deps.idempotency,
    ) as forgetful:
        order_id = OrderId(await place(world, rid("u"), pid, 2, deps=forgetful))
    await asyncio.sleep(0.3)

    report = await world.run(older_than=0.2)

    assert report.confirmed == [order_id]
    assert (report.released, fixes(report, pid)) == ([], [])
    assert await world.gate.pending(0) == []
    await check_stock(world.engine, world.gate, [pid])


async def test_the_gate_follows_stock_changed_by_hand_in_the_database(world: World) -> None:
    pid = await world.new_product(stock=10)
    await place(world, rid("u"), pid)

    await world.sql(
        "UPDATE products SET stock = stock + 5, available = available + 5 WHERE product_id = :p",
        p=pid,
    )
    raised = await world.run()
    await check_stock(world.engine, world.gate, [pid])
    await world.sql(
        "UPDATE products SET stock = stock - 12, available = available - 12 WHERE product_id = :p",
        p=pid,
    )
    lowered = await world.run()

    assert fixed(raised, pid) == (9, 14)
    assert fixed(lowered, pid) == (14, 2)
    await check_stock(world.engine, world.gate, [pid])


async def test_a_dry_run_reports_the_repairs_and_makes_none(world: World) -> None:
    pid = await world.new_product(stock=10)
    orphan = OrderId(rid("o"))
    await world.gate.reserve(orphan, UserId(rid("u")), [ReservationLine(pid, 1, None)])
    await world.sql("UPDATE products SET available = 4, stock = 4 WHERE product_id = :p", p=pid)
    await asyncio.sleep(0.3)

    report = await world.run(older_than=0.2, dry_run=True)

    assert orphan in report.released
    # Measured as things are: the orphan, not released, still counts as in flight.
    assert fixed(report, pid) == (9, 3)
    assert await world.gate.available(pid) == 9
    assert orphan in await world.gate.pending(0)


async def test_a_cancellation_between_its_commit_and_its_release_is_not_given_back_twice(
    world: World,
) -> None:
    pid = await world.new_product(stock=10)
    order_id = OrderId(await place(world, rid("u"), pid, 2))
    # The cancellation has committed (the database has the 2 units back) but its release in
    # the gate is held up: reconciliation sees the gate 2 short, a transient that vanishes.
    slow = SlowRelease(world.redis, prefix=world.prefix)
    cancel = asyncio.create_task(
        handlers.cancel_order(
            commands.CancelOrder(order_id), deps=dataclasses.replace(world.deps, stock=slow)
        )
    )
    await slow.holding.wait()
    watching = WatchesCorrections(
        world.redis, prefix=world.prefix, product_id=pid, after_first=slow.go
    )

    report = await reconcile(
        uow=world.deps.uow, stock=watching, locks=world.deps.locks, older_than=600
    )
    await cancel

    first, second = watching.seen
    assert (first.before, first.target, first.after) == (8, 10, 8)
    assert (second.before, second.target, second.after) == (10, 10, 10)
    assert fixes(report, pid) == []
    assert await world.gate.available(pid) == 10
    await check_stock(world.engine, world.gate, [pid])


async def test_the_periodic_reconciler_repairs_drift_survives_a_failed_run_and_stops_when_told(
    world: World,
) -> None:
    pid = await world.new_product(stock=10)
    await world.lose_redis_data()
    flaky = FailsOnce(world.redis, prefix=world.prefix)
    stop = asyncio.Event()
    loop = asyncio.create_task(
        run_reconciler(
            uow=world.deps.uow,
            stock=flaky,
            locks=world.deps.locks,
            every=0.05,
            older_than=600,
            stop=stop,
        )
    )

    restored = await eventually(lambda: world.gate.available(pid), 10)
    stop.set()
    async with asyncio.timeout(2):
        await loop

    assert (restored, flaky.failures) == (10, 1)


async def eventually(read: Callable[[], Awaitable[int | None]], want: int) -> int | None:
    give_up = time.monotonic() + 10
    while time.monotonic() < give_up:
        if (got := await read()) == want:
            return got
        await asyncio.sleep(0.02)
    return await read()


# --- races --------------------------------------------------------------------------------------


async def reconcile_until(world: World, done: asyncio.Event) -> list[ReconcileReport]:
    reports = []
    while not done.is_set():
        reports.append(await world.run())
        await asyncio.sleep(0.01)
    return reports


@pytest.mark.slow
@pytest.mark.parametrize("writes", ["one by one", "group commit"])
async def test_reconciling_during_a_burst_of_orders_never_oversells_and_changes_nothing(
    world: World, writes: str
) -> None:
    pid = await world.new_product(stock=100)
    done = asyncio.Event()
    loops = [asyncio.create_task(reconcile_until(world, done)) for _ in range(2)]

    try:
        async with reserving(
            uow=world.deps.uow,
            stock=world.deps.stock,
            locks=world.deps.locks,
            idempotency=world.deps.idempotency,
            batching=writes == "group commit",
        ) as deps:
            outcomes = await asyncio.gather(
                *(place(world, rid("u"), pid, deps=deps) for _ in range(300))
            )
    finally:
        done.set()
    reports = [report for loop in loops for report in await loop]

    statuses = Counter("created" if o not in ("SoldOut",) else o for o in outcomes)
    assert statuses == {"created": 100, "SoldOut": 200}
    assert len(reports) >= 2
    # Orders alone never open a gap between the gate and the database.
    assert [fixes(r, pid) for r in reports if fixes(r, pid)] == []
    assert [r.skipped for r in reports if pid in r.skipped] == []
    assert [r.released + r.confirmed for r in reports if r.released or r.confirmed] == []
    assert fixes(await world.run(), pid) == []
    figures = await check_stock(world.engine, world.gate, [pid])
    assert figures[pid] == {"stock": 100, "available": 0, "sold": 100}


@pytest.mark.slow
async def test_reconciling_while_redis_loses_its_data_mid_burst_never_oversells(
    world: World,
) -> None:
    pid = await world.new_product(stock=100, max_per_user=1)
    done = asyncio.Event()
    loop = asyncio.create_task(reconcile_until(world, done))

    async def lose_data_midway() -> None:
        await asyncio.sleep(0.3)
        await world.lose_redis_data()

    outcomes, _ = await asyncio.gather(
        asyncio.gather(*(place(world, rid("u"), pid) for _ in range(300))), lose_data_midway()
    )
    done.set()
    await loop

    # Orders in flight when the data went lost their reservations with it: their
    # transactions still committed, which the gate (primed meanwhile) could not know.
    # The database refused anything beyond the stock; one more run at rest repairs the gate.
    await world.run()
    figures = await check_stock(world.engine, world.gate, [pid])
    assert figures[pid]["sold"] == sum(o not in ("SoldOut", "LimitReached") for o in outcomes)
    assert figures[pid]["sold"] <= 100


# --- gates that misbehave on cue ----------------------------------------------------------------


class ForgetsToConfirm(RedisStockGate):
    """``confirm`` never happens: the worker died right after its commit."""

    async def confirm(self, *order_ids: OrderId) -> None:
        return None


class FailsOnce(RedisStockGate):
    """The first look at the pending reservations finds Redis down."""

    failures = 0

    async def pending(self, older_than_seconds: float) -> list[OrderId]:
        if not self.failures:
            self.failures += 1
            raise errors.Unavailable("redis", "connection refused (on cue)")
        return await super().pending(older_than_seconds)


class SlowRelease(RedisStockGate):
    """``release`` waits for ``go``; ``holding`` tells that one is waiting."""

    def __init__(self, client: Redis, *, prefix: str) -> None:
        super().__init__(client, prefix=prefix)
        self.holding = asyncio.Event()
        self.go = asyncio.Event()

    async def release(self, order_id: OrderId) -> bool:
        self.holding.set()
        await self.go.wait()
        return await super().release(order_id)


class WatchesCorrections(RedisStockGate):
    """Records the corrections of one product; sets ``after_first`` after the first."""

    def __init__(
        self, client: Redis, *, prefix: str, product_id: ProductId, after_first: asyncio.Event
    ) -> None:
        super().__init__(client, prefix=prefix)
        self._product_id = product_id
        self._after_first = after_first
        self.seen: list[GateCorrection] = []

    async def correct(
        self,
        product_id: ProductId,
        *,
        available: int,
        committed: Collection[OrderId],
        raise_by_at_most: int | None = None,
        user_counts: Mapping[UserId, int] | None = None,
        dry_run: bool = False,
    ) -> GateCorrection:
        result = await super().correct(
            product_id,
            available=available,
            committed=committed,
            raise_by_at_most=raise_by_at_most,
            user_counts=user_counts,
            dry_run=dry_run,
        )
        if product_id == self._product_id:
            self.seen.append(result)
            self._after_first.set()
        return result
