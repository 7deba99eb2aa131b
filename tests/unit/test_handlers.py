"""The order use cases on in-memory adapters (the unit of work's twin, the gate's, the
locks', the key cache's): no services, each test a few milliseconds.

What a keyed request answers when it is retried, when its answer was lost, when its outcome
was unknown to its caller (a timeout, a failure after the commit), and a cancel retried.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Self

import pytest

from flashorder.adapters.idempotency.memory import MemoryIdempotencyCache
from flashorder.adapters.locks.memory import MemoryLocks
from flashorder.adapters.sql.memory import MemoryStore, MemoryUnitOfWork, MemoryUnitOfWorkFactory
from flashorder.adapters.stock.memory import MemoryStockGate
from flashorder.application import handlers
from flashorder.application.handlers import Deps
from flashorder.application.ports import UnitOfWorkFactory
from flashorder.domain import commands, errors
from flashorder.domain.events import ORDER_CANCELLED, ORDER_CREATED
from flashorder.domain.model import OrderId, PaymentType, ProductId, UserId
from flashorder.domain.pricing import RequestedLine
from tests.support.deps import reserving

PRICE = 100


@dataclass
class Shop:
    deps: Deps
    store: MemoryStore
    gate: MemoryStockGate
    cache: MemoryIdempotencyCache

    async def product(self, stock: int, max_per_user: int | None = None) -> ProductId:
        pid = ProductId(f"PRD_{secrets.token_hex(4)}")
        cmd = commands.CreateProduct(pid, "item", PRICE, stock=stock, max_per_user=max_per_user)
        await handlers.create_product(cmd, deps=self.deps)
        return pid

    async def figures(self, pid: ProductId) -> tuple[int, int | None]:
        """The database's available and the gate's count of one product."""
        return self.store.products[pid].available, await self.gate.available(pid)

    def orders_of(self, user: str) -> list[OrderId]:
        return [oid for oid, order in self.store.orders.items() if order.user_id == user]


def order(
    user: str, pid: ProductId, key: str | None = None, quantity: int = 1
) -> commands.PlaceOrder:
    return commands.PlaceOrder(
        user_id=UserId(user),
        lines=(RequestedLine(pid, quantity, PRICE),),
        discount_policy_id=None,
        discount_amount=None,
        delivery_fee=0,
        payment_amount=PRICE * quantity,
        payment_type=PaymentType.CREDIT,
        idempotency_key=key,
    )


class Scripted:
    """The in-memory unit of work with its commit slowed down, or failing after it went
    through (the link lost while COMMIT was in flight: the outcome unknown to the caller)."""

    def __init__(
        self, inner: MemoryUnitOfWorkFactory, *, delay: float = 0.0, fail_after: bool = False
    ) -> None:
        self._inner = inner
        self._delay = delay
        self._fail_after = fail_after

    def __call__(self) -> ScriptedWork:
        return ScriptedWork(self._inner(), self._delay, self._fail_after)


class ScriptedWork:
    def __init__(self, inner: MemoryUnitOfWork, delay: float, fail_after: bool) -> None:
        self._inner = inner
        self._delay = delay
        self._fail_after = fail_after
        self.products = inner.products
        self.orders = inner.orders
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
        await asyncio.sleep(self._delay)
        await self._inner.commit()
        if self._fail_after:
            raise errors.Unavailable("database", "connection lost during COMMIT")


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    uow = MemoryUnitOfWorkFactory()
    gate = MemoryStockGate()
    cache = MemoryIdempotencyCache()
    async with reserving(
        uow=uow, stock=gate, locks=MemoryLocks(), idempotency=cache, batching=True
    ) as deps:
        yield Shop(deps, uow.store, gate, cache)


def writing_through(shop: Shop, uow: UnitOfWorkFactory) -> AbstractAsyncContextManager[Deps]:
    """The shop's deps, its orders written through ``uow``."""
    return reserving(
        uow=uow, stock=shop.gate, locks=shop.deps.locks, idempotency=shop.cache, batching=True
    )


async def until(done: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not done():  # noqa: ASYNC110 - the in-memory store signals nothing
            await asyncio.sleep(0.005)


async def test_a_retried_request_gets_the_first_answer_and_places_one_order(shop: Shop) -> None:
    pid = await shop.product(stock=10)

    first = await handlers.place_order(order("ann", pid, "k1"), deps=shop.deps)
    again = await handlers.place_order(order("ann", pid, "k1"), deps=shop.deps)

    assert (first.status_code, first.replayed) == (201, False)
    assert (again.status_code, again.replayed, again.body) == (201, True, first.body)
    assert shop.orders_of("ann") == [first.body["orderId"]]
    assert await shop.figures(pid) == (9, 9)
    with pytest.raises(errors.IdempotencyKeyReused):
        await handlers.place_order(order("ann", pid, "k1", quantity=2), deps=shop.deps)


async def test_the_answer_recorded_with_the_order_answers_a_retry_whose_cached_answer_was_lost(
    shop: Shop,
) -> None:
    pid = await shop.product(stock=1)
    first = await handlers.place_order(order("ann", pid, "k1"), deps=shop.deps)
    # The key cache lost everything (Redis restarted empty); the product is sold out, by that
    # very order.
    forgetful = replace(shop.deps, idempotency=MemoryIdempotencyCache())

    retry = await handlers.place_order(order("ann", pid, "k1"), deps=forgetful)

    assert (retry.replayed, retry.body["orderId"]) == (True, first.body["orderId"])
    assert shop.orders_of("ann") == [first.body["orderId"]]
    with pytest.raises(errors.SoldOut):
        await handlers.place_order(order("bob", pid, "k1"), deps=forgetful)
    assert await shop.figures(pid) == (0, 0)


async def test_a_caller_that_times_out_while_its_batch_commits_leaves_order_and_key_to_it(
    shop: Shop,
) -> None:
    pid = await shop.product(stock=1)
    async with writing_through(
        shop, Scripted(MemoryUnitOfWorkFactory(shop.store), delay=0.2)
    ) as slow:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await handlers.place_order(order("ann", pid, "k1"), deps=slow)
        # The API answers 503 and the client retries with the same key: while the batch has
        # not told its outcome, the key stays claimed.
        with pytest.raises(errors.DuplicateInFlight):
            await handlers.place_order(order("ann", pid, "k1"), deps=shop.deps)
        await until(lambda: bool(shop.orders_of("ann")))

    retry = await handlers.place_order(order("ann", pid, "k1"), deps=shop.deps)

    assert retry.replayed
    assert shop.orders_of("ann") == [retry.body["orderId"]]
    assert await shop.figures(pid) == (0, 0)
    assert await shop.gate.pending(0) == [], "the batch confirmed the reservation"


async def test_a_failure_after_the_commit_is_unavailable_and_a_retry_gets_the_order(
    shop: Shop,
) -> None:
    pid = await shop.product(stock=1)
    async with writing_through(
        shop, Scripted(MemoryUnitOfWorkFactory(shop.store), fail_after=True)
    ) as failing:
        with pytest.raises(errors.Unavailable):
            await handlers.place_order(order("ann", pid, "k1"), deps=failing)
    # Committed, though its caller heard otherwise; taken as not written, its reservation went
    # back and its key was let go: the gate is one unit above the database until
    # reconciliation lowers it (at once, as it finds it).
    (placed,) = shop.orders_of("ann")
    assert await shop.figures(pid) == (0, 1)

    retry = await handlers.place_order(order("ann", pid, "k1"), deps=shop.deps)

    assert (retry.replayed, retry.body["orderId"]) == (True, placed)
    assert shop.orders_of("ann") == [placed]
    assert await shop.figures(pid) == (0, 1), "the retry's own reservation went back"
    assert await shop.gate.pending(0) == []


async def test_a_cancel_retried_gives_the_stock_back_once(shop: Shop) -> None:
    pid = await shop.product(stock=10, max_per_user=3)
    placed = await handlers.place_order(order("ann", pid, quantity=2), deps=shop.deps)
    order_id = OrderId(str(placed.body["orderId"]))
    assert await shop.figures(pid) == (8, 8)
    cancel = commands.CancelOrder(order_id, UserId("ann"))

    first = await handlers.cancel_order(cancel, deps=shop.deps)
    retries = await asyncio.gather(
        *(handlers.cancel_order(cancel, deps=shop.deps) for _ in range(5))
    )

    assert first["status"] == "CANCELLED"
    assert all(r == first for r in retries)
    assert await shop.figures(pid) == (10, 10)
    assert shop.store.purchases[UserId("ann"), pid] == 0
    events = [e.type for e in shop.store.outbox if e.aggregate_id == order_id]
    assert events == [ORDER_CREATED, ORDER_CANCELLED]
    with pytest.raises(errors.OrderNotFound):
        await handlers.cancel_order(commands.CancelOrder(order_id, UserId("bob")), deps=shop.deps)
