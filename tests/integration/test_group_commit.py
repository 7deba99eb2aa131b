"""Group commit on SQLite and real MariaDB: batches commit whole, or each order alone."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.sql.uow import SqlUnitOfWorkFactory
from flashorder.application.group_commit import GroupCommit, PendingOrder
from flashorder.application.ports import ReservationLine, StoredResponse
from flashorder.domain import errors
from flashorder.domain.model import OrderId, Product, UserId
from tests.support.sql import (
    new_id,
    new_order,
    new_product,
    now,
)


async def stored(engine: AsyncEngine, product: Product) -> Product:
    uow = SqlUnitOfWorkFactory(engine)
    async with uow() as work:
        await work.products.add(product, now())
        await work.commit()
    return product


def pending(product: Product, user: str, quantity: int = 1, key: str | None = None) -> PendingOrder:
    order = new_order(UserId(user), [(product.product_id, quantity)])
    line = ReservationLine(product.product_id, quantity, product.max_per_user)
    return PendingOrder(order, [line], key, "fp", order.snapshot())


class Settled:
    """The gate as the writer settles reservations: which orders it confirmed, in how many
    calls, and which it released."""

    def __init__(self) -> None:
        self.orders: list[OrderId] = []
        self.calls = 0
        self.released: list[OrderId] = []

    async def confirm(self, *order_ids: OrderId) -> None:
        self.calls += 1
        self.orders += order_ids

    async def release(self, order_id: OrderId) -> bool:
        self.released.append(order_id)
        return True


async def count(engine: AsyncEngine, sql: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


async def test_concurrent_orders_share_transactions_and_all_commit(engine: AsyncEngine) -> None:
    product = await stored(engine, new_product(stock=300))
    uow = SqlUnitOfWorkFactory(engine)
    confirmed = Settled()
    writer = GroupCommit(uow, confirmed)
    try:
        batch = [pending(product, new_id("u")) for _ in range(300)]
        results = await asyncio.gather(*(writer.write(p) for p in batch))
    finally:
        await writer.close()
    assert results == [None] * 300
    assert writer.orders == 300
    assert writer.batches < 300
    # Every committed order's reservation is confirmed, with one gate call per batch.
    assert sorted(confirmed.orders) == sorted(p.order.order_id for p in batch)
    assert confirmed.calls == writer.batches
    assert await count(engine, "SELECT available FROM products") == 0
    assert await count(engine, "SELECT COUNT(*) FROM orders") == 300
    assert await count(engine, "SELECT COUNT(*) FROM outbox WHERE type = 'order.created'") == 300


async def test_an_order_the_database_refuses_fails_alone_and_keeps_its_events_elsewhere(
    engine: AsyncEngine,
) -> None:
    limited = await stored(engine, new_product(stock=100, max_per_user=1))
    uow = SqlUnitOfWorkFactory(engine)
    confirmed = Settled()
    writer = GroupCommit(uow, confirmed)
    greedy = new_id("u")
    try:
        first = await writer.write(pending(limited, greedy))
        # The second order of the same user passes no gate here: the database's count refuses
        # it, and the batch it shares with other buyers is written order by order.
        batch = [pending(limited, greedy)] + [pending(limited, new_id("u")) for _ in range(20)]
        results = await asyncio.gather(*(writer.write(p) for p in batch), return_exceptions=True)
    finally:
        await writer.close()
    assert first is None
    assert isinstance(results[0], errors.LimitReached)
    assert results[1:] == [None] * 20
    # The refused order's reservation is released, not confirmed.
    assert batch[0].order.order_id not in confirmed.orders
    assert confirmed.released == [batch[0].order.order_id]
    assert len(confirmed.orders) == 21
    assert await count(engine, "SELECT available FROM products") == 100 - 21
    assert await count(engine, "SELECT COUNT(*) FROM orders") == 21
    assert await count(engine, "SELECT COUNT(*) FROM outbox WHERE type = 'order.created'") == 21


async def test_a_key_already_recorded_replays_its_answer_and_the_rest_commit(
    engine: AsyncEngine,
) -> None:
    product = await stored(engine, new_product(stock=100))
    uow = SqlUnitOfWorkFactory(engine)
    user, key = new_id("u"), new_id("key")
    async with uow() as work:
        await work.idempotency.add(UserId(user), key, StoredResponse("fp", 201, {"x": 1}), now())
        await work.commit()
    confirmed = Settled()
    writer = GroupCommit(uow, confirmed)
    try:
        batch = [pending(product, user, key=key)] + [
            pending(product, new_id("u")) for _ in range(9)
        ]
        results = await asyncio.gather(*(writer.write(p) for p in batch))
    finally:
        await writer.close()
    assert results[0] == StoredResponse("fp", 201, {"x": 1})
    assert results[1:] == [None] * 9
    # The replayed order committed nothing: its reservation is released.
    assert sorted(confirmed.orders) == sorted(p.order.order_id for p in batch[1:])
    assert confirmed.released == [batch[0].order.order_id]
    assert await count(engine, "SELECT COUNT(*) FROM orders") == 9
    assert await count(engine, "SELECT available FROM products") == 91


async def test_with_batching_off_each_order_is_a_batch_of_one_in_its_own_transaction(
    engine: AsyncEngine,
) -> None:
    product = await stored(engine, new_product(stock=20))
    uow = SqlUnitOfWorkFactory(engine)
    settled = Settled()
    writer = GroupCommit(uow, settled, batching=False)
    try:
        batch = [pending(product, new_id("u")) for _ in range(30)]
        results = await asyncio.gather(*(writer.write(p) for p in batch), return_exceptions=True)
    finally:
        await writer.close()
    assert writer.batches == writer.orders == 30
    assert results.count(None) == 20
    assert all(isinstance(r, errors.SoldOut) for r in results if r is not None)
    assert settled.calls == 20
    assert sorted(settled.orders + settled.released) == sorted(p.order.order_id for p in batch)
    assert await count(engine, "SELECT COUNT(*) FROM orders") == 20
    assert await count(engine, "SELECT COUNT(*) FROM outbox WHERE type = 'order.created'") == 20
