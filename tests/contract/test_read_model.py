"""The ReadModel contract on SQLite and MariaDB: idempotent, order-insensitive, convergent."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.sql.errors import SerializationFailure
from flashorder.adapters.sql.read_model import SqlReadModel
from flashorder.adapters.sql.uow import SqlUnitOfWorkFactory
from flashorder.domain import errors
from flashorder.domain.events import Event
from flashorder.domain.model import Order, OrderId, ProductId, UserId, stock_changed
from tests.support.sql import (
    new_id,
    new_order,
    new_product,
    now,
)


@pytest.fixture
def read_model(engine: AsyncEngine) -> SqlReadModel:
    return SqlReadModel(engine)


def placed(user: UserId, lines: list[tuple[ProductId, int]]) -> tuple[Order, Event]:
    order = new_order(user, lines)
    created = order.events.pop()
    return order, created


def cancelled(order: Order) -> Event:
    assert order.cancel(now())
    return order.events.pop()


async def test_a_created_order_shows_in_its_view_and_in_the_sales(
    read_model: SqlReadModel,
) -> None:
    p1, p2 = ProductId(new_id("prd")), ProductId(new_id("prd"))
    order, created = placed(UserId(new_id("user")), [(p1, 2), (p2, 1)])
    assert await read_model.apply([created]) == 1
    assert await read_model.order(order.order_id) == order.snapshot()
    assert await read_model.product_sales(p1) == {"sold": 2, "orders": 1, "paid": 0}
    assert await read_model.product_sales(p2) == {"sold": 1, "orders": 1, "paid": 0}


async def test_unknown_orders_and_products_read_as_none(read_model: SqlReadModel) -> None:
    assert await read_model.order(OrderId(new_id("order"))) is None
    assert await read_model.product_sales(ProductId(new_id("prd"))) is None
    assert await read_model.orders_of(UserId(new_id("user")), cursor=None, limit=5) == ([], None)


async def test_applying_the_same_events_again_changes_nothing(read_model: SqlReadModel) -> None:
    product = ProductId(new_id("prd"))
    order, created = placed(UserId(new_id("user")), [(product, 3)])
    gone = cancelled(order)
    assert await read_model.apply([created, gone]) == 2
    assert await read_model.apply([created, gone]) == 0
    assert await read_model.apply([gone]) == 0
    assert await read_model.order(order.order_id) == order.snapshot()
    assert await read_model.product_sales(product) == {"sold": 0, "orders": 0, "paid": 0}


async def test_a_batch_mixing_applied_and_new_events_applies_only_the_new_ones(
    read_model: SqlReadModel,
) -> None:
    product = ProductId(new_id("prd"))
    order, created = placed(UserId(new_id("user")), [(product, 3)])
    other, other_created = placed(UserId(new_id("user")), [(product, 1)])
    assert await read_model.apply([created]) == 1

    assert await read_model.apply([other_created, created, cancelled(order)]) == 2

    assert (await read_model.order(order.order_id) or {})["status"] == "CANCELLED"
    assert await read_model.order(other.order_id) == other.snapshot()
    assert await read_model.product_sales(product) == {"sold": 1, "orders": 1, "paid": 0}


async def test_a_repeated_event_within_one_batch_counts_once(read_model: SqlReadModel) -> None:
    product = ProductId(new_id("prd"))
    _, created = placed(UserId(new_id("user")), [(product, 2)])
    assert await read_model.apply([created, created, created]) == 1
    assert await read_model.product_sales(product) == {"sold": 2, "orders": 1, "paid": 0}


async def test_a_cancel_that_arrives_before_its_create_converges_to_the_cancelled_order(
    read_model: SqlReadModel,
) -> None:
    product = ProductId(new_id("prd"))
    order, created = placed(UserId(new_id("user")), [(product, 4)])
    gone = cancelled(order)
    assert await read_model.apply([gone]) == 1
    assert await read_model.apply([created]) == 1
    view = await read_model.order(order.order_id)
    assert view == order.snapshot()
    assert view is not None
    assert view["status"] == "CANCELLED"
    assert await read_model.product_sales(product) == {"sold": 0, "orders": 0, "paid": 0}


async def test_an_older_snapshot_never_overwrites_a_newer_one(read_model: SqlReadModel) -> None:
    order, created = placed(UserId(new_id("user")), [(ProductId(new_id("prd")), 1)])
    gone = cancelled(order)
    # Both new, in one batch, newest first: the view still ends at the newest.
    assert await read_model.apply([gone, created]) == 2
    view = await read_model.order(order.order_id)
    assert view is not None
    assert (view["status"], view["version"]) == ("CANCELLED", 2)


async def test_stock_changes_are_recorded_but_change_no_view(read_model: SqlReadModel) -> None:
    product = new_product()
    event = stock_changed(product, at=now())
    assert await read_model.apply([event]) == 0
    assert await read_model.apply([]) == 0
    assert await read_model.product_sales(product.product_id) is None


@pytest.mark.slow
async def test_concurrent_projectors_with_overlapping_batches_converge(
    read_model: SqlReadModel, engine: AsyncEngine
) -> None:
    products = [ProductId(new_id("prd")) for _ in range(3)]
    rng = random.Random(7)
    orders: list[Order] = []
    events: list[Event] = []
    for _ in range(40):
        chosen = rng.sample(products, rng.randint(1, 3))
        order, created = placed(UserId(new_id("user")), [(p, rng.randint(1, 3)) for p in chosen])
        orders.append(order)
        events.append(created)
        if rng.random() < 0.4:
            events.append(cancelled(order))
    # Every projector sees every event, shuffled, in batches of different sizes; each
    # projector's stream is redelivered once on top (a crash before its offsets committed).
    streams = []
    for size in (5, 7, 11):
        stream = events + rng.sample(events, len(events) // 2)
        rng.shuffle(stream)
        streams.append([stream[i : i + size] for i in range(0, len(stream), size)])

    retries = 0

    async def project(batches: list[list[Event]]) -> int:
        # As the projector does: a batch whose transaction lost a deadlock (InnoDB: three
        # transactions inserting one event id, the first one's statement undone) was rolled
        # back whole, and is applied again.
        nonlocal retries
        applied = 0
        for batch in batches:
            while True:
                try:
                    applied += await read_model.apply(batch)
                    break
                except SerializationFailure:
                    retries += 1
        return applied

    applied = await asyncio.gather(*(project(batches) for batches in streams))
    assert sum(applied) == len(events)
    assert retries < len(streams[0]), "a deadlock now and then, not on every batch"
    for order in orders:
        assert await read_model.order(order.order_id) == order.snapshot()
    for product in products:
        live = [o for o in orders if o.status.value == "CREATED"]
        lines = [line for o in live for line in o.lines if line.product_id == product]
        expected = {"sold": sum(line.quantity for line in lines), "orders": len(lines), "paid": 0}
        assert await read_model.product_sales(product) == expected


async def test_orders_of_pages_newest_first_without_gaps_or_repeats(
    read_model: SqlReadModel,
) -> None:
    user, other = UserId(new_id("user")), UserId(new_id("user"))
    mine = [placed(user, [(ProductId(new_id("prd")), 1)]) for _ in range(23)]
    theirs = [placed(other, [(ProductId(new_id("prd")), 1)]) for _ in range(4)]
    await read_model.apply([created for _, created in mine + theirs])
    expected = sorted((order.snapshot() for order, _ in mine), key=lambda o: o["orderId"])[::-1]
    pages: list[list[dict[str, object]]] = []
    cursor: str | None = None
    while True:
        page, cursor = await read_model.orders_of(user, cursor=cursor, limit=5)
        pages.append(page)
        if cursor is None:
            break
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    assert [view for page in pages for view in page] == expected


async def test_a_full_last_page_has_no_next_cursor(read_model: SqlReadModel) -> None:
    user = UserId(new_id("user"))
    await read_model.apply([placed(user, [(ProductId(new_id("p")), 1)])[1] for _ in range(4)])
    first, cursor = await read_model.orders_of(user, cursor=None, limit=2)
    assert cursor is not None
    second, cursor = await read_model.orders_of(user, cursor=cursor, limit=2)
    assert (len(first), len(second), cursor) == (2, 2, None)


@pytest.mark.parametrize("cursor", ["!!", "", "%%%", "A" * 80, "gICA"])
async def test_a_cursor_the_service_did_not_give_out_is_invalid(
    read_model: SqlReadModel, cursor: str
) -> None:
    with pytest.raises(errors.Invalid):
        await read_model.orders_of(UserId(new_id("user")), cursor=cursor, limit=5)


async def test_a_page_needs_room_for_one_order(read_model: SqlReadModel) -> None:
    with pytest.raises(errors.Invalid):
        await read_model.orders_of(UserId(new_id("user")), cursor=None, limit=0)


async def test_queries_answer_while_a_writer_holds_the_database(
    read_model: SqlReadModel, engine: AsyncEngine
) -> None:
    order, created = placed(UserId(new_id("user")), [(ProductId(new_id("prd")), 1)])
    await read_model.apply([created])
    async with SqlUnitOfWorkFactory(engine)() as writer:
        await writer.products.add(new_product(), now())
        # On SQLite the writer holds the only write lock; readers must not queue behind it.
        async with asyncio.timeout(3):
            assert await read_model.order(order.order_id) == order.snapshot()
            assert await read_model.orders_of(order.user_id, cursor=None, limit=5) == (
                [order.snapshot()],
                None,
            )
