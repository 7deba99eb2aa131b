"""The UnitOfWork contract on SQLite, MariaDB and the in-memory twin, including real races on
one hot row. Tests of the SQL adapter alone (schema, connections, deadlocks) run on the two
databases only."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters import sql
from flashorder.adapters.sql.engine import make_engine
from flashorder.adapters.sql.memory import MemoryUnitOfWorkFactory
from flashorder.adapters.sql.migrate import migrate
from flashorder.adapters.sql.outbox import row_event
from flashorder.adapters.sql.tables import metadata, outbox
from flashorder.adapters.sql.uow import SerializationFailure, SqlUnitOfWorkFactory
from flashorder.application.ports import (
    IdempotencyRecord,
    PaymentRecord,
    PurchaseTake,
    StoredResponse,
    UnitOfWorkFactory,
)
from flashorder.domain import errors
from flashorder.domain.events import ORDER_CANCELLED, ORDER_CREATED, Event
from flashorder.domain.model import (
    DiscountKind,
    DiscountPolicy,
    DiscountPolicyId,
    OrderId,
    OrderStatus,
    PaymentOutcome,
    PaymentStatus,
    ProductId,
    UserId,
    stock_changed,
)
from tests.support.sql import (
    BACKENDS,
    migrated_database,
    new_id,
    new_order,
    new_product,
    now,
)

MEMORY = pytest.param("memory", id="memory")
#: For the tests of the SQL adapter alone.
sql_only = pytest.mark.parametrize("backend", BACKENDS, indirect=True)

OutboxEvents = Callable[[str], Awaitable[list[Event]]]


@pytest.fixture(scope="module", params=[MEMORY, *BACKENDS])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def database(
    backend: str, tmp_path_factory: pytest.TempPathFactory, mariadb_url: str
) -> Iterator[str]:
    assert backend != "memory", "a test of the SQL adapter alone is marked sql_only"
    folder = tmp_path_factory.mktemp("uow")
    with migrated_database(backend, folder=folder, mariadb_url=mariadb_url) as url:
        yield url


@pytest.fixture
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database, pool_size=20)
    yield engine
    await engine.dispose()


@pytest.fixture
def uow(backend: str, request: pytest.FixtureRequest) -> UnitOfWorkFactory:
    if backend == "memory":
        return MemoryUnitOfWorkFactory()
    return SqlUnitOfWorkFactory(request.getfixturevalue("engine"))


@pytest.fixture
def outbox_events(
    backend: str, uow: UnitOfWorkFactory, request: pytest.FixtureRequest
) -> OutboxEvents:
    """The committed events of one aggregate, in the order they were written."""
    if isinstance(uow, MemoryUnitOfWorkFactory):
        store = uow.store

        async def in_memory(aggregate_id: str) -> list[Event]:
            return [e for e in store.outbox if e.aggregate_id == aggregate_id]

        return in_memory
    engine: AsyncEngine = request.getfixturevalue("engine")

    async def in_database(aggregate_id: str) -> list[Event]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(outbox).where(outbox.c.aggregate_id == aggregate_id).order_by(outbox.c.id)
            )
            return [row_event(row) for row in rows]

    return in_database


async def stored_product(uow: UnitOfWorkFactory, product_id: ProductId) -> tuple[int, int]:
    async with uow() as work:
        product = await work.products.get(product_id)
    assert product is not None
    return product.stock, product.available


# --- schema ------------------------------------------------------------------------------------


@sql_only
async def test_migrations_create_exactly_the_schema_the_tables_describe(
    engine: AsyncEngine,
) -> None:
    # Every module of the SQL adapter that declares tables on the shared metadata, not only
    # sql.tables.
    for module in pkgutil.iter_modules(sql.__path__, "flashorder.adapters.sql."):
        importlib.import_module(module.name)

    def differences(conn: Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(differences) == []


@sql_only
async def test_migrating_an_up_to_date_database_changes_nothing(
    database: str, engine: AsyncEngine, uow: SqlUnitOfWorkFactory
) -> None:
    kept = new_product(stock=5)
    async with uow() as work:
        await work.products.add(kept, now())
        await work.commit()
    before = await schema_and_rows(engine)

    await asyncio.to_thread(migrate, database)
    await asyncio.to_thread(migrate, database)

    # The same revision, tables, columns and types, and every row where it was.
    assert await schema_and_rows(engine) == before
    assert await stored_product(uow, kept.product_id) == (5, 5)


async def schema_and_rows(engine: AsyncEngine) -> dict[str, object]:
    """The alembic revision, each table's columns with their types, and its row count."""

    def read(conn: Connection) -> dict[str, object]:
        found: dict[str, object] = {}
        inspector = inspect(conn)
        for table in sorted(inspector.get_table_names()):
            columns = [(c["name"], str(c["type"])) for c in inspector.get_columns(table)]
            count = conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
            found[table] = (columns, count)
        found["revision"] = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        return found

    async with engine.connect() as conn:
        return await conn.run_sync(read)


# --- products ----------------------------------------------------------------------------------


async def test_added_product_reads_back_alone_and_in_batches(uow: UnitOfWorkFactory) -> None:
    first, second = new_product(stock=5, max_per_user=2), new_product(stock=7)
    async with uow() as work:
        await work.products.add(first, now())
        await work.products.add(second, now())
        await work.commit()
    async with uow() as work:
        assert await work.products.get(first.product_id) == first
        assert await work.products.get(second.product_id, for_update=True) == second
        assert await work.products.get(ProductId(new_id("missing"))) is None
        batch = await work.products.get_many(
            [first.product_id, second.product_id, first.product_id, ProductId(new_id("none"))]
        )
        assert batch == {first.product_id: first, second.product_id: second}
        assert await work.products.get_many([]) == {}


async def test_a_products_own_delivery_fee_reads_back(uow: UnitOfWorkFactory) -> None:
    bulky = replace(new_product(stock=2), delivery_fee=10**12)
    plain = new_product(stock=2)
    async with uow() as work:
        await work.products.add(bulky, now())
        await work.products.add(plain, now())
        await work.commit()
    async with uow() as work:
        found = await work.products.get_many([bulky.product_id, plain.product_id])
    assert found[bulky.product_id].delivery_fee == 10**12
    assert found[plain.product_id].delivery_fee == 0


async def test_change_sale_writes_the_window_the_deadline_and_the_fee_and_nothing_else(
    uow: UnitOfWorkFactory,
) -> None:
    product = replace(new_product(stock=5), pay_within_seconds=60, delivery_fee=700)
    async with uow() as work:
        await work.products.add(product, now())
        await work.commit()
    starts = datetime(2026, 12, 24, 9, 0, tzinfo=UTC)
    # The stock, price and name of the product passed in are not this method's to write.
    changed = replace(
        product,
        sale_starts_at=starts,
        sale_ends_at=starts + timedelta(hours=2),
        pay_within_seconds=None,
        delivery_fee=1500,
        stock=99,
        available=99,
        price=1,
        name="other",
    )
    async with uow() as work:
        await work.products.change_sale(changed, now())
        await work.products.change_sale(replace(product, product_id=ProductId(new_id("no"))), now())
        await work.commit()
    async with uow() as work:
        found = await work.products.get(product.product_id)
    assert found == replace(
        product,
        sale_starts_at=starts,
        sale_ends_at=starts + timedelta(hours=2),
        pay_within_seconds=None,
        delivery_fee=1500,
    )


async def test_adding_an_existing_product_is_already_exists(uow: UnitOfWorkFactory) -> None:
    product = new_product()
    async with uow() as work:
        await work.products.add(product, now())
        await work.commit()
    async with uow() as work:
        with pytest.raises(errors.AlreadyExists):
            await work.products.add(product, now())


async def test_take_stock_takes_while_enough_is_available(uow: UnitOfWorkFactory) -> None:
    product = new_product(stock=3)
    async with uow() as work:
        await work.products.add(product, now())
        await work.commit()
    async with uow() as work:
        assert await work.products.take_stock(product.product_id, 2)
        assert not await work.products.take_stock(product.product_id, 2)
        assert await work.products.take_stock(product.product_id, 1)
        assert not await work.products.take_stock(product.product_id, 1)
        assert not await work.products.take_stock(ProductId(new_id("missing")), 1)
        await work.commit()
    async with uow() as work:
        taken = await work.products.get(product.product_id)
    assert taken is not None
    assert (taken.stock, taken.available, taken.sold) == (3, 0, 3)
    assert taken.version == product.version + 2


async def test_given_back_stock_is_available_again(uow: UnitOfWorkFactory) -> None:
    product = new_product(stock=4)
    async with uow() as work:
        await work.products.add(product, now())
        await work.products.take_stock(product.product_id, 3)
        await work.products.give_back_stock(product.product_id, 2)
        await work.commit()
    assert await stored_product(uow, product.product_id) == (4, 3)


async def test_change_stock_moves_stock_and_available_but_never_below_zero(
    uow: UnitOfWorkFactory,
) -> None:
    product = new_product(stock=10)
    async with uow() as work:
        await work.products.add(product, now())
        await work.products.take_stock(product.product_id, 6)
        await work.commit()
    async with uow() as work:
        grown = await work.products.change_stock(product.product_id, 5, now())
        refused = await work.products.change_stock(product.product_id, -10, now())
        cut = await work.products.change_stock(product.product_id, -9, now())
        missing = await work.products.change_stock(ProductId(new_id("missing")), 1, now())
        await work.commit()
    assert grown is not None
    assert (grown.stock, grown.available, grown.sold) == (15, 9, 6)
    assert refused is None
    assert missing is None
    assert cut is not None
    assert (cut.stock, cut.available, cut.sold) == (6, 0, 6)
    assert cut.version > grown.version > product.version


# --- orders and the outbox ----------------------------------------------------------------------


async def test_committed_order_reads_back_with_its_lines_and_its_event_in_the_outbox(
    uow: UnitOfWorkFactory, outbox_events: OutboxEvents
) -> None:
    p1, p2 = new_product(), new_product()
    order = new_order(UserId(new_id("user")), [(p1.product_id, 2), (p2.product_id, 1)])
    created = list(order.events)
    async with uow() as work:
        await work.orders.add(order)
        await work.commit()
    assert order.events == []
    async with uow() as work:
        stored = await work.orders.get(order.order_id)
        locked = await work.orders.get(order.order_id, for_update=True)
        assert await work.orders.get(OrderId(new_id("missing"))) is None
    assert stored == order
    assert locked == order
    assert await outbox_events(order.order_id) == created
    assert created[0].type == ORDER_CREATED


async def test_rolled_back_work_leaves_no_order_and_no_outbox_row(
    uow: UnitOfWorkFactory, outbox_events: OutboxEvents
) -> None:
    product = new_product(stock=1)
    left = new_order(UserId(new_id("user")), [(product.product_id, 1)])
    failed = new_order(UserId(new_id("user")), [(product.product_id, 1)])
    async with uow() as work:
        await work.products.add(product, now())
        await work.commit()
    async with uow() as work:
        await work.orders.add(left)
        await work.products.take_stock(product.product_id, 1)
    with pytest.raises(errors.SoldOut):  # noqa: PT012 - the rollback is what is tested
        async with uow() as work:
            await work.orders.add(failed)
            raise errors.SoldOut(product.product_id)
    async with uow() as work:
        assert await work.orders.get(left.order_id) is None
        assert await work.orders.get(failed.order_id) is None
    assert await outbox_events(left.order_id) == []
    assert await outbox_events(failed.order_id) == []
    assert await stored_product(uow, product.product_id) == (1, 1)


async def test_adding_an_existing_order_is_already_exists(uow: UnitOfWorkFactory) -> None:
    order = new_order(UserId(new_id("user")), [(ProductId(new_id("prd")), 1)])
    again = new_order(order.user_id, [(ProductId(new_id("prd")), 1)], order_id=order.order_id)
    async with uow() as work:
        await work.orders.add(order)
        await work.commit()
    async with uow() as work:
        with pytest.raises(errors.AlreadyExists):
            await work.orders.add(again)


async def test_save_writes_a_cancel_once_and_refuses_a_stale_copy(
    uow: UnitOfWorkFactory, outbox_events: OutboxEvents
) -> None:
    order = new_order(UserId(new_id("user")), [(ProductId(new_id("prd")), 1)])
    async with uow() as work:
        await work.orders.add(order)
        await work.commit()
    async with uow() as work:
        first = await work.orders.get(order.order_id)
    async with uow() as work:
        stale = await work.orders.get(order.order_id)
    assert first is not None
    assert stale is not None
    assert first.cancel(now())
    async with uow() as work:
        assert await work.orders.save(first)
        await work.commit()
    assert stale.cancel(now())
    async with uow() as work:
        assert not await work.orders.save(stale)
        await work.commit()
    async with uow() as work:
        stored = await work.orders.get(order.order_id)
    assert stored is not None
    assert (stored.status, stored.version) == (OrderStatus.CANCELLED, 2)
    events = await outbox_events(order.order_id)
    assert [(e.type, e.aggregate_version) for e in events] == [
        (ORDER_CREATED, 1),
        (ORDER_CANCELLED, 2),
    ]


async def test_recorded_events_are_written_with_the_work(
    uow: UnitOfWorkFactory, outbox_events: OutboxEvents
) -> None:
    product = new_product()
    event = stock_changed(product, at=now())
    async with uow() as work:
        await work.products.add(product, now())
        work.record(event)
        work.record()
        await work.commit()
    assert await outbox_events(product.product_id) == [event]


# --- idempotency records, discounts, purchase counts ------------------------------------------


async def test_idempotency_record_reads_back_and_a_second_one_is_already_exists(
    uow: UnitOfWorkFactory,
) -> None:
    user, key = UserId(new_id("user")), new_id("key")
    response = StoredResponse("fp-1", 201, {"orderId": "x", "items": [{"quantity": 1}]})
    async with uow() as work:
        await work.idempotency.add(user, key, response, now())
        await work.commit()
    async with uow() as work:
        with pytest.raises(errors.AlreadyExists):
            await work.idempotency.add(user, key, StoredResponse("fp-2", 201, {}), now())
        # The transaction survives the duplicate: the caller reads the record and goes on.
        assert await work.idempotency.get(user, key) == response
        assert await work.idempotency.get(user, key.upper()) is None
        assert await work.idempotency.get(UserId(new_id("user")), key) is None


async def test_work_goes_on_and_commits_after_a_duplicate_key(uow: UnitOfWorkFactory) -> None:
    product, other = new_product(), new_product()
    async with uow() as work:
        await work.products.add(product, now())
        await work.commit()
    async with uow() as work:
        with pytest.raises(errors.AlreadyExists):
            await work.products.add(product, now())
        await work.products.add(other, now())
        await work.commit()
    async with uow() as work:
        assert await work.products.get(other.product_id) == other


async def test_discount_policy_reads_back_and_a_second_one_is_already_exists(
    uow: UnitOfWorkFactory,
) -> None:
    policy = DiscountPolicy(
        policy_id=DiscountPolicyId(new_id("pol")),
        kind=DiscountKind.PERCENT,
        value=10,
        min_order_amount=5000,
        max_discount=2000,
        valid_from=datetime(2024, 7, 1, 12, tzinfo=UTC),
        valid_until=datetime(2024, 7, 2, 12, 0, 0, 123456, tzinfo=UTC),
    )
    async with uow() as work:
        await work.discounts.add(policy)
        await work.commit()
    async with uow() as work:
        assert await work.discounts.get(policy.policy_id) == policy
        assert await work.discounts.get(DiscountPolicyId(new_id("none"))) is None
        with pytest.raises(errors.AlreadyExists):
            await work.discounts.add(policy)


async def test_purchases_count_up_to_the_limit_and_give_back(uow: UnitOfWorkFactory) -> None:
    user, other, product = UserId(new_id("u")), UserId(new_id("u")), ProductId(new_id("p"))
    async with uow() as work:
        assert not await work.purchases.take(user, product, 3, 2)
        assert await work.purchases.take(user, product, 1, 2)
        assert await work.purchases.take(user, product, 1, 2)
        assert not await work.purchases.take(user, product, 1, 2)
        assert await work.purchases.take(other, product, 2, 2)
        await work.purchases.give_back(user, product, 1)
        assert await work.purchases.take(user, product, 1, 2)
        await work.purchases.give_back(other, product, 5)
        await work.purchases.give_back(UserId(new_id("u")), product, 1)
        await work.commit()
    async with uow() as work:
        assert await work.purchases.counts(product) == {user: 2}
        assert await work.purchases.counts(ProductId(new_id("p"))) == {}


async def test_take_many_counts_every_take_in_one_go_summing_a_users_repeats(
    uow: UnitOfWorkFactory,
) -> None:
    a, b, c = (UserId(new_id("u")) for _ in range(3))
    hot, other = ProductId(new_id("p")), ProductId(new_id("p"))
    async with uow() as work:
        assert await work.purchases.take(a, hot, 1, 4)
        await work.commit()
    async with uow() as work:
        takes = [
            PurchaseTake(a, hot, 2, 4),
            PurchaseTake(b, hot, 1, 4),
            PurchaseTake(b, hot, 2, 4),  # b's two takes add up: 3 of 4
            PurchaseTake(c, other, 1, 1),
        ]
        assert await work.purchases.take_many(takes)
        assert await work.purchases.take_many([])
        await work.commit()
    async with uow() as work:
        assert await work.purchases.counts(hot) == {a: 3, b: 3}
        assert await work.purchases.counts(other) == {c: 1}


@pytest.mark.parametrize("past", ["an existing count", "repeats that add up"])
async def test_take_many_refuses_a_batch_with_any_count_past_its_limit(
    uow: UnitOfWorkFactory, past: str
) -> None:
    holder, buyer, repeater = (UserId(new_id("u")) for _ in range(3))
    product = ProductId(new_id("p"))
    async with uow() as work:
        assert await work.purchases.take(holder, product, 3, 4)
        await work.commit()
    batch = [PurchaseTake(buyer, product, 1, 4)]
    if past == "an existing count":
        batch.append(PurchaseTake(holder, product, 2, 4))  # 3 + 2 > 4
    else:
        batch += [PurchaseTake(repeater, product, 1, 1), PurchaseTake(repeater, product, 1, 1)]
    async with uow() as work:
        assert not await work.purchases.take_many(batch)
    async with uow() as work:  # refused work is rolled back: nothing was counted
        assert await work.purchases.counts(product) == {holder: 3}


@pytest.mark.parametrize(("take", "accepted"), [(3, True), (4, False)])
async def test_take_many_holds_each_buyer_to_their_own_limit_when_limits_differ(
    uow: UnitOfWorkFactory, take: int, accepted: bool
) -> None:
    # Two limits for one product in one batch (the limit changed while orders were under
    # way): a count past the lower limit is no violation for the buyer with the higher one.
    early, late = UserId(new_id("u")), UserId(new_id("u"))
    product = ProductId(new_id("p"))
    async with uow() as work:
        assert await work.purchases.take(early, product, 2, 5)
        await work.commit()
    batch = [PurchaseTake(early, product, take, 5), PurchaseTake(late, product, 1, 2)]
    async with uow() as work:
        assert await work.purchases.take_many(batch) is accepted
        if accepted:  # a refused batch is rolled back by its caller
            await work.commit()
    async with uow() as work:
        expected = {early: 2 + take, late: 1} if accepted else {early: 2}
        assert await work.purchases.counts(product) == expected


async def test_idempotency_add_many_records_every_key_or_refuses_a_known_one(
    uow: UnitOfWorkFactory,
) -> None:
    user, other = UserId(new_id("user")), UserId(new_id("user"))
    first = [
        IdempotencyRecord(user, "k1", StoredResponse("fp-1", 201, {"orderId": "o1"}), now()),
        IdempotencyRecord(other, "k1", StoredResponse("fp-2", 201, {"orderId": "o2"}), now()),
    ]
    async with uow() as work:
        await work.idempotency.add_many(first)
        await work.idempotency.add_many([])
        await work.commit()
    fresh = IdempotencyRecord(user, "k2", StoredResponse("fp-3", 201, {}), now())
    async with uow() as work:
        with pytest.raises(errors.AlreadyExists):
            await work.idempotency.add_many([fresh, first[1]])
    async with uow() as work:
        assert await work.idempotency.get(user, "k1") == first[0].response
        assert await work.idempotency.get(other, "k1") == first[1].response
        assert await work.idempotency.get(user, "k2") is None


# --- times, misuse, failures --------------------------------------------------------------------


async def test_times_come_back_as_the_same_instant_in_utc(uow: UnitOfWorkFactory) -> None:
    seoul = timezone(timedelta(hours=9))
    at = datetime(2024, 7, 1, 21, 0, 0, 654321, tzinfo=seoul)
    order = new_order(UserId(new_id("user")), [(ProductId(new_id("prd")), 1)])
    order.created_at = order.updated_at = at
    async with uow() as work:
        await work.orders.add(order)
        await work.commit()
    async with uow() as work:
        stored = await work.orders.get(order.order_id)
    assert stored is not None
    assert stored.created_at == at
    assert stored.created_at.tzinfo == UTC
    assert stored.created_at.hour == 12


async def test_naive_times_are_refused(uow: UnitOfWorkFactory) -> None:
    async with uow() as work:
        with pytest.raises(Exception, match="naive datetime"):
            await work.products.add(new_product(), datetime(2024, 7, 1, 12))


async def test_a_unit_of_work_runs_once_and_its_repositories_only_inside(
    uow: UnitOfWorkFactory,
) -> None:
    work = uow()
    with pytest.raises(RuntimeError):
        await work.products.get(ProductId("x"))
    async with work:
        await work.commit()
        with pytest.raises(RuntimeError):
            await work.products.get(ProductId("x"))
        with pytest.raises(RuntimeError):
            await work.commit()
    with pytest.raises(RuntimeError):
        async with work:
            pass


@sql_only
async def test_an_unreachable_database_is_unavailable(database: str, tmp_path: Path) -> None:
    if database.startswith("sqlite"):
        # A folder where the database file should be: SQLite cannot open it.
        url = f"sqlite+aiosqlite:///{tmp_path}"
    else:
        url = "mysql+asyncmy://flashorder:flashorder@127.0.0.1:1/nowhere"
    engine = make_engine(url, pool_size=1)
    threads_before = set(threading.enumerate())
    try:
        with pytest.raises(errors.Unavailable):
            async with SqlUnitOfWorkFactory(engine)() as work:
                await work.products.get(ProductId("x"))
    finally:
        await engine.dispose()
    # aiosqlite stops the worker thread of a failed connect without waiting for it; wait
    # here, or the worker may report to this test's event loop after it closed.
    for thread in set(threading.enumerate()) - threads_before:
        thread.join(timeout=5)


@sql_only
async def test_cancelled_work_rolls_back_and_gives_its_connection_back(database: str) -> None:
    engine = make_engine(database, pool_size=1)
    uow = SqlUnitOfWorkFactory(engine)
    product = new_product(stock=5)

    async def blocked_take() -> None:
        async with asyncio.timeout(0.2), uow() as work:
            await work.products.take_stock(product.product_id, 1)
            await work.products.get(product.product_id, for_update=True)
            await work.commit()

    try:
        async with uow() as work:
            await work.products.add(product, now())
            await work.commit()
        async with uow() as holder:
            await holder.products.get(product.product_id, for_update=True)
            # More cancellations than the pool has connections: a leak would show below.
            for _ in range(4):
                with pytest.raises(TimeoutError):
                    await blocked_take()
        assert await stored_product(uow, product.product_id) == (5, 5)
    finally:
        await engine.dispose()


@sql_only
async def test_a_deadlock_victim_gets_a_retryable_serialization_failure(
    engine: AsyncEngine,
) -> None:
    uow = SqlUnitOfWorkFactory(engine)
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer at a time: transactions queue, they cannot deadlock")
    a, b = new_product(), new_product()
    async with uow() as work:
        await work.products.add(a, now())
        await work.products.add(b, now())
        await work.commit()
    both_hold_one = asyncio.Barrier(2)

    async def lock_in_order(first: ProductId, second: ProductId) -> str:
        async with uow() as work:
            await work.products.get(first, for_update=True)
            await both_hold_one.wait()
            try:
                await work.products.get(second, for_update=True)
            except SerializationFailure:
                return "victim"
            await work.commit()
            return "committed"

    outcomes = await asyncio.gather(
        lock_in_order(a.product_id, b.product_id), lock_in_order(b.product_id, a.product_id)
    )
    assert sorted(outcomes) == ["committed", "victim"]
    assert issubclass(SerializationFailure, errors.Unavailable)


# --- races --------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_concurrent_orders_never_oversell_a_hot_product(
    backend: str, uow: UnitOfWorkFactory, outbox_events: OutboxEvents
) -> None:
    buyers, stock = (90, 30) if backend == "sqlite" else (300, 100)
    product = new_product(stock=stock)
    async with uow() as work:
        await work.products.add(product, now())
        await work.commit()

    async def buy() -> OrderId | None:
        order = new_order(UserId(new_id("user")), [(product.product_id, 1)])
        async with uow() as work:
            await work.orders.add(order)
            # The hot row last, as the handler does.
            if not await work.products.take_stock(product.product_id, 1):
                return None
            await work.commit()
        return order.order_id

    placed = [o for o in await asyncio.gather(*(buy() for _ in range(buyers))) if o]
    assert len(placed) == stock
    assert await stored_product(uow, product.product_id) == (stock, 0)
    for order_id in placed:
        assert [e.type for e in await outbox_events(order_id)] == [ORDER_CREATED]


@pytest.mark.slow
async def test_concurrent_purchases_of_one_user_stop_at_the_limit(
    uow: UnitOfWorkFactory,
) -> None:
    user, product = UserId(new_id("user")), ProductId(new_id("prd"))

    async def take() -> bool:
        async with uow() as work:
            if not await work.purchases.take(user, product, 1, 2):
                return False
            await work.commit()
            return True

    results = await asyncio.gather(*(take() for _ in range(30)))
    assert results.count(True) == 2
    async with uow() as work:
        assert await work.purchases.counts(product) == {user: 2}


@pytest.mark.slow
async def test_concurrent_cancels_give_the_stock_back_once(uow: UnitOfWorkFactory) -> None:
    product = new_product(stock=5)
    order = new_order(UserId(new_id("user")), [(product.product_id, 2)])
    async with uow() as work:
        await work.products.add(product, now())
        await work.orders.add(order)
        assert await work.products.take_stock(product.product_id, 2)
        await work.commit()

    async def cancel() -> bool:
        async with uow() as work:
            copy = await work.orders.get(order.order_id)
            assert copy is not None
            if not copy.cancel(now()) or not await work.orders.save(copy):
                return False
            for line in copy.lines:
                await work.products.give_back_stock(line.product_id, line.quantity)
            await work.commit()
            return True

    results = await asyncio.gather(*(cancel() for _ in range(20)))
    assert results.count(True) == 1
    assert await stored_product(uow, product.product_id) == (5, 5)


# --- the order's life: guarded transitions, due orders, payment records ------------------------


async def test_a_save_is_refused_when_the_status_moved_on_even_at_the_same_version(
    uow: UnitOfWorkFactory,
) -> None:
    order = new_order(UserId(new_id("user")), [(ProductId(new_id("prd")), 1)])
    async with uow() as work:
        await work.orders.add(order)
        await work.commit()
    async with uow() as work:
        paying = await work.orders.get(order.order_id)
        expiring = await work.orders.get(order.order_id)
    assert paying is not None
    assert expiring is not None
    paid = paying.record_payment(
        status=PaymentStatus.SUCCEEDED,
        amount=paying.payment_amount,
        payment_ref=new_id("evt"),
        at=now(),
        grace=timedelta(minutes=5),
    )
    assert paid is PaymentOutcome.PAID
    assert expiring.expire(expiring.pay_by)
    async with uow() as work:
        assert await work.orders.save(paying)
        await work.commit()
    async with uow() as work:
        assert not await work.orders.save(expiring)
    async with uow() as work:
        stored = await work.orders.get(order.order_id)
    assert stored is not None
    assert (stored.status, stored.version, stored.paid_at) == (
        OrderStatus.PAID,
        2,
        paying.paid_at,
    )


async def test_due_orders_are_the_unpaid_ones_past_their_deadline_oldest_first(
    uow: UnitOfWorkFactory,
) -> None:
    user, product = UserId(new_id("user")), ProductId(new_id("prd"))
    orders = [new_order(user, [(product, 1)]) for _ in range(3)]
    orders[1].pay_by = orders[0].pay_by - timedelta(seconds=5)
    async with uow() as work:
        await work.orders.add_many(orders)
        await work.commit()
    async with uow() as work:
        # The module's database is shared: other tests' orders may be due too.
        due = [o.order_id for o in await work.orders.due(orders[0].pay_by, 1000)]
        not_yet = [o.order_id for o in await work.orders.due(orders[1].pay_by - timedelta(1), 1000)]
    ours = [o for o in due if o in {x.order_id for x in orders}]
    assert ours[:2] == [orders[1].order_id, orders[0].order_id]
    assert not {x.order_id for x in orders} & set(not_yet)


async def test_a_payment_event_is_recorded_once(uow: UnitOfWorkFactory) -> None:
    record = PaymentRecord(
        payment_ref=new_id("evt"),
        order_id=OrderId(new_id("order")),
        amount=10050,
        status=PaymentStatus.SUCCEEDED,
        outcome=PaymentOutcome.PAID,
        order_status=OrderStatus.PAID,
        at=now(),
    )
    async with uow() as work:
        await work.payments.add(record)
        await work.commit()
    async with uow() as work:
        with pytest.raises(errors.AlreadyExists):
            await work.payments.add(record)
    async with uow() as work:
        assert await work.payments.get(record.payment_ref) == record
        assert await work.payments.get(new_id("evt")) is None
