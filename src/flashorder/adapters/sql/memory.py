"""The unit of work's in-memory twin: the relational store's contract without a database.

For fast unit tests of the handlers; held to the same contract suite as SQLite and MariaDB
(``tests/contract/test_unit_of_work.py``), so it cannot drift. (The embedded mode keeps
SQLite: it must survive a restart.)

One unit of work at a time per store, readers included, in the order they came (SQLite
queues its writers the same way): a unit of work waits for the one before it to end. Its
writes go into the store at once and are undone if it ends without a commit, so no other
unit of work ever sees them uncommitted. What goes in and comes out is copied, as a
database would: a caller's later changes to an order never reach the store.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Self, TypeVar

import orjson

from flashorder.application.ports import (
    DiscountPolicies,
    IdempotencyRecord,
    IdempotencyRecords,
    OrderRepository,
    PaymentRecord,
    PaymentRecords,
    ProductRepository,
    PurchaseLimits,
    PurchaseTake,
    StoredResponse,
)
from flashorder.domain import errors
from flashorder.domain.events import Event
from flashorder.domain.model import (
    DiscountPolicy,
    DiscountPolicyId,
    Order,
    OrderId,
    OrderStatus,
    Product,
    ProductId,
    UserId,
)


@dataclass
class MemoryStore:
    """The committed state: what a database would hold."""

    products: dict[ProductId, Product] = field(default_factory=dict)
    orders: dict[OrderId, Order] = field(default_factory=dict)
    purchases: dict[tuple[UserId, ProductId], int] = field(default_factory=dict)
    #: (user, key) -> (fingerprint, status code, body as JSON)
    idempotency: dict[tuple[UserId, str], tuple[str, int, bytes]] = field(default_factory=dict)
    discounts: dict[DiscountPolicyId, DiscountPolicy] = field(default_factory=dict)
    payments: dict[str, PaymentRecord] = field(default_factory=dict)
    #: Every committed event, in the order written.
    outbox: list[Event] = field(default_factory=list)
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)


K = TypeVar("K")
V = TypeVar("V")


class _Work:
    """One unit of work's hold on the store: whether it is open, and how to undo it."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.open = False
        self.undo: list[Callable[[], object]] = []

    def check(self) -> MemoryStore:
        if not self.open:
            raise RuntimeError("use the repositories inside `async with unit_of_work:`")
        return self.store

    def put(self, table: dict[K, V], key: K, value: V) -> None:
        if key in table:
            self.undo.append(partial(table.__setitem__, key, table[key]))
        else:
            self.undo.append(partial(table.pop, key))
        table[key] = value

    def roll_back(self) -> None:
        for undo in reversed(self.undo):
            undo()
        self.undo.clear()


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: times are stored as instants")
    return at.astimezone(UTC)


class MemoryProducts:
    def __init__(self, work: _Work) -> None:
        self._work = work

    async def get(self, product_id: ProductId, *, for_update: bool = False) -> Product | None:
        return self._work.check().products.get(product_id)

    async def get_many(self, product_ids: Sequence[ProductId]) -> dict[ProductId, Product]:
        products = self._work.check().products
        return {pid: products[pid] for pid in set(product_ids) if pid in products}

    async def add(self, product: Product, at: datetime) -> None:
        _utc(at)
        products = self._work.check().products
        if product.product_id in products:
            raise errors.AlreadyExists(f"product {product.product_id!r}")
        self._work.put(products, product.product_id, product)

    async def take_stock(self, product_id: ProductId, quantity: int) -> bool:
        products = self._work.check().products
        product = products.get(product_id)
        if product is None or product.available < quantity:
            return False
        taken = replace(
            product, available=product.available - quantity, version=product.version + 1
        )
        self._work.put(products, product_id, taken)
        return True

    async def give_back_stock(self, product_id: ProductId, quantity: int) -> None:
        products = self._work.check().products
        product = products.get(product_id)
        if product is not None:
            back = replace(
                product, available=product.available + quantity, version=product.version + 1
            )
            self._work.put(products, product_id, back)

    async def change_stock(self, product_id: ProductId, delta: int, at: datetime) -> Product | None:
        _utc(at)
        products = self._work.check().products
        product = products.get(product_id)
        if product is None or product.available + delta < 0:
            return None
        changed = replace(
            product,
            stock=product.stock + delta,
            available=product.available + delta,
            version=product.version + 1,
        )
        self._work.put(products, product_id, changed)
        return changed

    async def change_sale(self, product: Product, at: datetime) -> None:
        _utc(at)
        products = self._work.check().products
        stored = products.get(product.product_id)
        if stored is not None:
            changed = replace(
                stored,
                sale_starts_at=product.sale_starts_at,
                sale_ends_at=product.sale_ends_at,
                pay_within_seconds=product.pay_within_seconds,
                queued=product.queued,
                queue_opens_at=product.queue_opens_at,
                admission_per_second=product.admission_per_second,
                delivery_fee=product.delivery_fee,
            )
            self._work.put(products, product.product_id, changed)

    async def all_ids(self) -> list[ProductId]:
        return sorted(self._work.check().products)

    async def committed_among(
        self, product_id: ProductId, order_ids: Collection[OrderId]
    ) -> set[OrderId]:
        orders = self._work.check().orders
        return {
            oid
            for oid in order_ids
            if (order := orders.get(oid)) is not None
            and order.status.holds_stock
            and any(line.product_id == product_id for line in order.lines)
        }


class MemoryOrders:
    def __init__(self, work: _Work) -> None:
        self._work = work
        #: The orders written in this unit of work: their events go to the outbox at commit.
        self.written: list[Order] = []

    async def add(self, order: Order) -> None:
        await self.add_many([order])

    async def add_many(self, orders: Sequence[Order]) -> None:
        stored = self._work.check().orders
        ids = {order.order_id for order in orders}
        if len(ids) < len(orders) or not ids.isdisjoint(stored):
            what = f"order {orders[0].order_id!r}" if len(orders) == 1 else "an order of the batch"
            raise errors.AlreadyExists(what)
        for order in orders:
            copy = replace(
                order,
                created_at=_utc(order.created_at),
                updated_at=_utc(order.updated_at),
                events=[],
            )
            self._work.put(stored, order.order_id, copy)
        self.written.extend(orders)

    async def get(self, order_id: OrderId, *, for_update: bool = False) -> Order | None:
        order = self._work.check().orders.get(order_id)
        return None if order is None else replace(order, events=[])

    async def save(self, order: Order) -> bool:
        orders = self._work.check().orders
        stored = orders.get(order.order_id)
        if (
            stored is None
            or stored.version != order.version - 1
            or stored.status is not order.guard_status
        ):
            return False
        saved = replace(
            stored,
            status=order.status,
            version=order.version,
            updated_at=_utc(order.updated_at),
            pay_by=order.pay_by,
            paid_at=order.paid_at,
            payment_ref=order.payment_ref,
            deadline_extended=order.deadline_extended,
        )
        self._work.put(orders, order.order_id, saved)
        if not any(seen is order for seen in self.written):
            self.written.append(order)
        order.loaded_status = None
        return True

    async def due(self, at: datetime, limit: int) -> list[Order]:
        # One unit of work at a time holds the store: nothing is locked by another to skip.
        waiting = [
            o
            for o in self._work.check().orders.values()
            if o.status is OrderStatus.CREATED and o.pay_by <= at
        ]
        waiting.sort(key=lambda o: o.pay_by)
        return [replace(o, events=[]) for o in waiting[:limit]]


class MemoryPurchaseLimits:
    def __init__(self, work: _Work) -> None:
        self._work = work

    async def take(self, user_id: UserId, product_id: ProductId, quantity: int, limit: int) -> bool:
        return await self.take_many([PurchaseTake(user_id, product_id, quantity, limit)])

    async def take_many(self, takes: Sequence[PurchaseTake]) -> bool:
        counts = self._work.check().purchases
        wanted: dict[tuple[UserId, ProductId], int] = defaultdict(int)
        limits: dict[tuple[UserId, ProductId], int] = {}
        for take in takes:
            at = (take.user_id, take.product_id)
            wanted[at] += take.quantity
            limits[at] = min(limits.get(at, take.limit), take.limit)
        if any(counts.get(at, 0) + quantity > limits[at] for at, quantity in wanted.items()):
            return False
        for at, quantity in wanted.items():
            self._work.put(counts, at, counts.get(at, 0) + quantity)
        return True

    async def give_back(self, user_id: UserId, product_id: ProductId, quantity: int) -> None:
        counts = self._work.check().purchases
        at = (user_id, product_id)
        if at in counts:
            self._work.put(counts, at, max(counts[at] - quantity, 0))

    async def counts(self, product_id: ProductId) -> dict[UserId, int]:
        counts = self._work.check().purchases
        return {uid: q for (uid, pid), q in counts.items() if pid == product_id and q > 0}


class MemoryIdempotencyRecords:
    def __init__(self, work: _Work) -> None:
        self._work = work

    async def add(self, user_id: UserId, key: str, response: StoredResponse, at: datetime) -> None:
        await self.add_many([IdempotencyRecord(user_id, key, response, at)])

    async def add_many(self, records: Sequence[IdempotencyRecord]) -> None:
        stored = self._work.check().idempotency
        keys = {(r.user_id, r.key) for r in records}
        if len(keys) < len(records) or not keys.isdisjoint(stored):
            what = (
                f"idempotency key {records[0].key!r}" if len(records) == 1 else "a key of the batch"
            )
            raise errors.AlreadyExists(what)
        for r in records:
            _utc(r.at)
            response = r.response
            row = (response.fingerprint, response.status_code, orjson.dumps(response.body))
            self._work.put(stored, (r.user_id, r.key), row)

    async def get(self, user_id: UserId, key: str) -> StoredResponse | None:
        row = self._work.check().idempotency.get((user_id, key))
        if row is None:
            return None
        fingerprint, status_code, body = row
        return StoredResponse(fingerprint, status_code, orjson.loads(body))


class MemoryPaymentRecords:
    def __init__(self, work: _Work) -> None:
        self._work = work

    async def add(self, record: PaymentRecord) -> None:
        payments = self._work.check().payments
        if record.payment_ref in payments:
            raise errors.AlreadyExists(f"payment event {record.payment_ref!r}")
        self._work.put(payments, record.payment_ref, replace(record, at=_utc(record.at)))

    async def get(self, payment_ref: str) -> PaymentRecord | None:
        return self._work.check().payments.get(payment_ref)


class MemoryDiscountPolicies:
    def __init__(self, work: _Work) -> None:
        self._work = work

    async def get(self, policy_id: DiscountPolicyId) -> DiscountPolicy | None:
        return self._work.check().discounts.get(policy_id)

    async def add(self, policy: DiscountPolicy) -> None:
        discounts = self._work.check().discounts
        if policy.policy_id in discounts:
            raise errors.AlreadyExists(f"discount policy {policy.policy_id!r}")
        stored = replace(
            policy,
            valid_from=None if policy.valid_from is None else _utc(policy.valid_from),
            valid_until=None if policy.valid_until is None else _utc(policy.valid_until),
        )
        self._work.put(discounts, policy.policy_id, stored)


class MemoryUnitOfWork:
    """``UnitOfWork`` on a ``MemoryStore``; entered once, like the SQL one."""

    def __init__(self, store: MemoryStore) -> None:
        self._work = _Work(store)
        self._entered = False
        self._orders = MemoryOrders(self._work)
        self._recorded: tuple[Event, ...] = ()
        self.products: ProductRepository = MemoryProducts(self._work)
        self.orders: OrderRepository = self._orders
        self.purchases: PurchaseLimits = MemoryPurchaseLimits(self._work)
        self.idempotency: IdempotencyRecords = MemoryIdempotencyRecords(self._work)
        self.discounts: DiscountPolicies = MemoryDiscountPolicies(self._work)
        self.payments: PaymentRecords = MemoryPaymentRecords(self._work)

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a unit of work runs once; ask the factory for a new one")
        self._entered = True
        await self._work.store.turn.acquire()
        self._work.open = True
        return self

    def record(self, *events: Event) -> None:
        self._recorded += events

    async def commit(self) -> None:
        if not self._work.open:
            raise RuntimeError("commit inside `async with unit_of_work:`, once")
        written = self._orders.written
        events = [event for order in written for event in order.events]
        events += self._recorded
        self._work.store.outbox.extend(replace(e, occurred_at=_utc(e.occurred_at)) for e in events)
        self._work.undo.clear()
        self._end()
        for order in written:
            order.events.clear()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._work.open:
            self._work.roll_back()
            self._end()

    def _end(self) -> None:
        self._work.open = False
        self._work.store.turn.release()


class MemoryUnitOfWorkFactory:
    """``UnitOfWorkFactory`` over one store (``store`` is there for tests to look into)."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store or MemoryStore()

    def __call__(self) -> MemoryUnitOfWork:
        return MemoryUnitOfWork(self.store)
