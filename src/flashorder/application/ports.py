"""The ports: what the application needs from the outside world, as Protocols.

Every port has a real adapter (MariaDB or SQLite, Redis, Kafka) and an in-memory twin; one
contract suite runs against both so the twin cannot drift.

Errors: an adapter translates its driver's exceptions into ``Unavailable`` (the dependency is
down or timed out) or into the domain error the port documents. Nothing else escapes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

from flashorder.domain.events import Event
from flashorder.domain.model import (
    DiscountPolicy,
    DiscountPolicyId,
    Money,
    Order,
    OrderId,
    OrderStatus,
    PaymentOutcome,
    PaymentStatus,
    Product,
    ProductId,
    UserId,
)
from flashorder.domain.queue import AdmissionTerms, QueueState, Ticket

JsonObject = dict[str, Any]


# --- Redis side: the fast gate ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReservationLine:
    product_id: ProductId
    quantity: int
    #: The per-user limit of the product, checked atomically with the reservation.
    max_per_user: int | None


class StockUnknown(Exception):
    """The gate holds no count for this product (new gate, or Redis restarted empty).

    The caller primes it from the database (``prime``) and tries again.
    """

    def __init__(self, product_id: ProductId) -> None:
        super().__init__(product_id)
        self.product_id = product_id


class StockGate(Protocol):
    """Atomic stock reservation in front of the database.

    A reservation is keyed by its order: reserving the same order twice takes stock once,
    and releasing it twice gives stock back once.
    """

    async def reserve(
        self, order_id: OrderId, user_id: UserId, lines: Sequence[ReservationLine]
    ) -> None:
        """Reserve every line or none. Raises SoldOut, LimitReached or StockUnknown."""

    async def confirm(self, *order_ids: OrderId) -> None:
        """These reservations are backed by committed orders: reconciliation leaves them
        alone. Idempotent; one round trip whatever the number of orders."""

    async def release(self, order_id: OrderId) -> bool:
        """Give the stock and the per-user counts back. True only the first time."""

    async def prime(self, product_id: ProductId, available: int) -> bool:
        """Set the count only if the gate has none. True if it was set."""

    async def put(self, product_id: ProductId, available: int) -> None:
        """Overwrite the count (product creation, reconciliation)."""

    async def adjust(self, product_id: ProductId, delta: int) -> int:
        """Add ``delta`` (may be negative) unless the count would drop below zero.

        Returns the new count. Raises StockBelowCommitted or StockUnknown.
        """

    async def available(self, product_id: ProductId) -> int | None: ...

    async def pending(self, older_than_seconds: float) -> list[OrderId]:
        """Reservations neither confirmed nor released for longer than the given age."""

    async def set_user_count(self, product_id: ProductId, user_id: UserId, quantity: int) -> None:
        """Overwrite a user's bought count (reconciliation after Redis lost its data)."""


class Locks(Protocol):
    """A distributed lock: unique token, compare-and-delete release, a renewed lease."""

    def hold(
        self, name: str, *, wait: float | None = None, lease: float | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Hold ``name`` for the body of the ``async with``.

        Waits up to ``wait`` seconds (the configured default when None), then raises
        DuplicateInFlight. The lease is renewed while the body runs.
        """
        ...


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What an idempotent request answered, kept to answer its retries the same way."""

    fingerprint: str
    status_code: int
    body: JsonObject


class IdempotencyCache(Protocol):
    """The fast layer of idempotency keys. The database holds the durable record."""

    async def begin(self, user_id: UserId, key: str, fingerprint: str) -> StoredResponse | None:
        """Claim the key for one request.

        None: the caller owns the key until ``finish`` or ``abandon`` (or the lease ends).
        A StoredResponse: an earlier request with the same fingerprint completed; replay it.
        Raises DuplicateInFlight while another request holds the key, and
        IdempotencyKeyReused when the stored fingerprint differs.
        """

    async def finish(self, user_id: UserId, key: str, response: StoredResponse) -> None: ...

    async def abandon(self, user_id: UserId, key: str) -> None: ...


# --- the database side: unit of work --------------------------------------------------------


class ProductRepository(Protocol):
    async def get(self, product_id: ProductId, *, for_update: bool = False) -> Product | None: ...

    async def get_many(self, product_ids: Sequence[ProductId]) -> dict[ProductId, Product]: ...

    async def add(self, product: Product, at: datetime) -> None:
        """Raises AlreadyExists."""

    async def take_stock(self, product_id: ProductId, quantity: int) -> bool:
        """``UPDATE … SET available = available - q WHERE available >= q``: True if one row."""

    async def give_back_stock(self, product_id: ProductId, quantity: int) -> None: ...

    async def change_stock(self, product_id: ProductId, delta: int, at: datetime) -> Product | None:
        """Add ``delta`` to stock and available unless available would go negative.

        Returns the changed product, or None when the guard refused it.
        """

    async def change_sale(self, product: Product, at: datetime) -> None:
        """Write the product's sale window, payment deadline and delivery fee (nothing
        else: not its stock, which moves only by the guarded writes)."""

    async def all_ids(self) -> list[ProductId]:
        """Every product's id, in id order (reconciliation walks the catalogue)."""

    async def committed_among(
        self, product_id: ProductId, order_ids: Collection[OrderId]
    ) -> set[OrderId]:
        """Those of ``order_ids`` whose units of the product are out of ``available``: live
        (CREATED or PAID) orders with a line of the product."""


class OrderRepository(Protocol):
    async def add(self, order: Order) -> None:
        """Insert the order and its lines; the unit of work writes its events at commit."""

    async def add_many(self, orders: Sequence[Order]) -> None:
        """``add`` for several orders in a few multi-row statements (group commit).

        Raises AlreadyExists if any order id exists; then nothing of the batch should commit.
        """

    async def get(self, order_id: OrderId, *, for_update: bool = False) -> Order | None: ...

    async def save(self, order: Order) -> bool:
        """Write the order's state if the stored row still has the status it was loaded with
        (``order.guard_status``) and the version before; the unit of work then writes its
        events at commit.

        One guarded ``UPDATE … WHERE status = :was AND version = :before``: of writers that
        loaded the same state, exactly one wins. False for the others (the caller re-reads).
        """

    async def due(self, at: datetime, limit: int) -> list[Order]:
        """Up to ``limit`` CREATED orders whose ``pay_by`` is not after ``at``, oldest
        deadline first, locked for this unit of work. Rows another unit of work holds are
        skipped (``FOR UPDATE SKIP LOCKED``), so concurrent expirers share the work."""


@dataclass(frozen=True, slots=True)
class PurchaseTake:
    """``quantity`` more units of a product for a user, within ``limit``."""

    user_id: UserId
    product_id: ProductId
    quantity: int
    limit: int


class PurchaseLimits(Protocol):
    """The durable per-user counts behind ``maxPerUser``."""

    async def take(self, user_id: UserId, product_id: ProductId, quantity: int, limit: int) -> bool:
        """Count ``quantity`` more for the user unless it would pass ``limit``."""

    async def take_many(self, takes: Sequence[PurchaseTake]) -> bool:
        """``take`` for many counts in a few statements, whatever their number (group
        commit). Takes of the same user and product add up. False when any count would pass
        its limit; some counts may then be taken already: the unit of work must not commit.
        """

    async def give_back(self, user_id: UserId, product_id: ProductId, quantity: int) -> None: ...

    async def counts(self, product_id: ProductId) -> dict[UserId, int]: ...


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    user_id: UserId
    key: str
    response: StoredResponse
    at: datetime


class IdempotencyRecords(Protocol):
    async def add(self, user_id: UserId, key: str, response: StoredResponse, at: datetime) -> None:
        """Raises AlreadyExists when the key is already recorded for this user."""

    async def add_many(self, records: Sequence[IdempotencyRecord]) -> None:
        """``add`` for many records in one statement (group commit). Raises AlreadyExists
        when any key is already recorded; nothing of the unit of work should commit then."""

    async def get(self, user_id: UserId, key: str) -> StoredResponse | None: ...


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """A payment event of the provider, as processed: what it said and what it did."""

    payment_ref: str
    order_id: OrderId
    amount: Money
    status: PaymentStatus
    outcome: PaymentOutcome
    #: The order's status once the event was applied.
    order_status: OrderStatus
    at: datetime


class PaymentRecords(Protocol):
    """The provider's events that were processed, one row per event id: an event delivered
    again (at once, concurrently, or days later) finds its row and changes nothing."""

    async def add(self, record: PaymentRecord) -> None:
        """Raises AlreadyExists when the event id is recorded (or being recorded by a
        concurrent transaction that then commits)."""

    async def get(self, payment_ref: str) -> PaymentRecord | None: ...


class DiscountPolicies(Protocol):
    async def get(self, policy_id: DiscountPolicyId) -> DiscountPolicy | None: ...

    async def add(self, policy: DiscountPolicy) -> None:
        """Raises AlreadyExists."""


class UnitOfWork(Protocol):
    """One database transaction. Nothing commits behind its back.

    Leaving the ``async with`` without ``commit`` rolls back.

    The one way into the outbox: ``commit`` writes the events recorded by the orders this
    unit of work wrote (``orders.add``, ``add_many``, a successful ``save``) and those given
    to ``record``, in the same transaction, and clears the orders' events only once the
    commit succeeded (a unit of work that rolled back can be run again with them).
    """

    products: ProductRepository
    orders: OrderRepository
    purchases: PurchaseLimits
    idempotency: IdempotencyRecords
    discounts: DiscountPolicies
    payments: PaymentRecords

    def record(self, *events: Event) -> None:
        """Events of no order (a product's stock change), written at commit."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...


# --- events: outbox → broker → read model -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxBatch:
    """Rows claimed by one relay; no other relay sees them until this one is done."""

    events: Sequence[Event]


class OutboxRelayStore(Protocol):
    def claim(self, limit: int) -> AbstractAsyncContextManager[OutboxBatch]:
        """Claim up to ``limit`` unpublished events, oldest first (``FOR UPDATE SKIP LOCKED``).

        If the body returns normally they are marked published; if it raises, they stay.
        """
        ...

    async def purge(self, older_than: datetime) -> int:
        """Delete published rows older than the retention; returns how many."""

    async def backlog(self) -> int:
        """How many events wait to be published."""


class EventPublisher(Protocol):
    async def publish(self, events: Sequence[Event]) -> None:
        """Publish all (acknowledged by the broker) or raise Unavailable."""


class ReadModel(Protocol):
    """The query side's tables, written only by the projector."""

    async def apply(self, events: Sequence[Event]) -> int:
        """Apply idempotently (by event id, guarded by aggregate version). Returns how many
        changed something."""

    async def order(self, order_id: OrderId) -> JsonObject | None: ...

    async def orders_of(
        self, user_id: UserId, *, cursor: str | None, limit: int
    ) -> tuple[list[JsonObject], str | None]:
        """Newest first. Returns the page and the cursor of the next page (None at the end)."""

    async def product_sales(self, product_id: ProductId) -> Mapping[str, int] | None: ...


@dataclass(frozen=True, slots=True)
class OrderHead:
    """An order's owner and current version on the write side."""

    user_id: UserId
    version: int


class OrderLookup(Protocol):
    """Reads of the write side for the query side's read-your-writes (never in a unit of
    work: a plain read that takes no lock and, on SQLite, no write turn)."""

    async def head(self, order_id: OrderId) -> OrderHead | None: ...

    async def snapshot(self, order_id: OrderId) -> JsonObject | None:
        """The order as its events carry it (``Order.snapshot``)."""


class EventConsumer(Protocol):
    """One member of a consumer group reading the event topics (at-least-once).

    Events fetched but not committed are fetched again by the group after a restart or a
    rebalance, so whatever applies them must be idempotent.
    """

    async def fetch(self, max_events: int, timeout: float) -> Sequence[Event]:
        """The next events, at most ``max_events``; ``[]`` when none came within ``timeout``.

        Events of one aggregate and one type come in the order they were published (each
        type is its own topic); across types there is no order: an ``order.cancelled`` may
        come before its ``order.created``. Consumers order by ``aggregate_version``.
        """

    async def commit(self) -> None:
        """Everything fetched so far is applied: the group will not fetch it again.

        Raises Unavailable; the events then stay uncommitted and may come again.
        """

    async def lag(self) -> int:
        """How many events in the topics the group has not committed yet."""


# --- reconciliation: the gate brought back in line with the database --------------------------


@dataclass(frozen=True, slots=True)
class GateView:
    """What the gate holds for one product, read in one atomic step."""

    #: The count; None when the gate has none (a fresh or emptied Redis).
    available: int | None
    #: Unconfirmed reservations with a line of the product -> their quantity of it.
    in_flight: Mapping[OrderId, int]
    #: False when the per-user counts of the product may have been lost since they were last
    #: rebuilt (``correct`` with ``user_counts`` rebuilds them and sets this again).
    users_known: bool


@dataclass(frozen=True, slots=True)
class GateCorrection:
    """What ``correct`` found and did (or, in a dry run, would have done)."""

    #: The count before; None when there was none.
    before: int | None
    #: What the count should be: the database's available minus ``in_flight``.
    target: int
    #: The count after (it differs from ``target`` only where a raise was capped).
    after: int
    #: Units held by unconfirmed reservations whose orders are not live in the database.
    in_flight: int
    #: How many users' counts the rebuild changed; None when there was no rebuild.
    users_rebuilt: int | None

    @property
    def changed(self) -> bool:
        return self.before != self.after or bool(self.users_rebuilt)


class ReconcilableStockGate(StockGate, Protocol):
    """A stock gate that reconciliation can compare with the database and correct."""

    async def view(self, product_id: ProductId) -> GateView: ...

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
        """Bring the product's count to ``available`` minus what is in flight, atomically.

        The caller read ``available`` under the product row's lock and holds it until this
        returns, so no order of the product commits meanwhile. In flight is every
        unconfirmed reservation with a line of the product, except those in ``committed``
        (their orders are live in the database, so ``available`` already paid for them).
        A reservation made after the caller's ``view`` is in flight: it cannot have
        committed while the row is locked.

        A missing count is set. An existing count is lowered at once but raised by at most
        ``raise_by_at_most`` units (None: no limit); a negative target is kept as it is,
        since the releases of the reservations in flight bring it back exactly.
        With ``user_counts`` (the database's), the per-user counts are rebuilt as those plus
        each user's quantities in flight, and marked known.
        """


# --- admission ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket: ``rate`` tokens a second, holding at most ``burst``. A bucket nobody
    used for a while is full (it may be forgotten: a missing bucket is a full one)."""

    key: str
    rate: float
    burst: int


class RateLimiter(Protocol):
    """Token buckets shared by every process that uses the same store."""

    async def take(self, buckets: Sequence[Bucket]) -> float:
        """Take one token from every bucket, or from none.

        Returns 0 when every bucket had a token and one was taken from each; otherwise how
        many seconds until the emptiest of them will have one, and no bucket was touched (a
        caller refused by their own bucket costs a shared one nothing). Atomic over all the
        buckets: concurrent takes never overdraw any. Raises Unavailable.
        """
        ...


# --- watching a sale: the figures of the live sale page and of the metrics ---------------------


@dataclass(frozen=True, slots=True)
class ProductSale:
    """One product's sale, read from the write model (the source of truth) in one go."""

    product_id: ProductId
    name: str
    stock: int
    available: int
    #: Orders that hold a line of the product, by order status (``CREATED`` holds stock
    #: until paid or expired; ``PAID``, ``EXPIRED``, ``CANCELLED``, …); absent status: 0.
    orders: Mapping[str, int]

    @property
    def sold(self) -> int:
        return self.stock - self.available


@dataclass(frozen=True, slots=True)
class OutboxState:
    """The relay's backlog: how many events wait, and since when the oldest has waited."""

    backlog: int
    oldest_at: datetime | None


class SaleFigures(Protocol):
    """Reads for the people who watch a sale. Each call is one or two indexed queries; the
    callers read at most once a second per process (the sale page) or per scrape."""

    async def products(
        self, product_ids: Collection[ProductId], *, newest: int = 0
    ) -> list[ProductSale]:
        """The products of ``product_ids``, and the ``newest`` most recently changed other
        ones (an overview of what is on sale), most recently changed first."""

    async def orders_by_status(self) -> Mapping[str, int]:
        """Every order, counted by status."""

    async def outbox(self) -> OutboxState: ...


@dataclass(frozen=True, slots=True)
class OrderCallsSample:
    """The order call's figures since the metrics began, summed over every API process:
    calls by outcome (``ok`` or the problem type of a refusal) and the latency histogram's
    cumulative buckets ``(upper bound in seconds, calls at or below it)``, ascending."""

    outcomes: Mapping[str, float]
    latency_buckets: Sequence[tuple[float, float]]


class QueueStore(Protocol):
    """The waiting rooms of queued sales (``domain/queue.py``). Each call is atomic per
    product; times are the caller's (ms since the epoch), so every adapter and every test
    sees one clock."""

    async def join(
        self,
        product_id: ProductId,
        user_id: UserId,
        *,
        ticket_id: str,
        seed: str,
        now_ms: int,
        starts_ms: int,
    ) -> tuple[Ticket, bool]:
        """The user's ticket, and whether it is new. A user has one ticket per sale: a join
        while it waits or is admitted returns it (``ticket_id`` unused); a join after it left
        or expired takes a new one (``ticket_id``). The sale's seed is ``seed`` if it has
        none yet. Before the start and the draw a new ticket takes its draw score, after
        them the next place at the back."""
        ...

    async def ticket(
        self, product_id: ProductId, ticket_id: str, *, now_ms: int
    ) -> Ticket | None: ...

    async def leave(self, product_id: ProductId, ticket_id: str, *, now_ms: int) -> Ticket | None:
        """Give the place up (a waiting or admitted ticket); other states stay as they are."""
        ...

    async def advance(
        self, product_id: ProductId, terms: AdmissionTerms, ordered: Sequence[UserId] = ()
    ) -> QueueState:
        """One admission step, from the start on (before it, only the state): note the
        ``ordered`` users' turns as used, end the turns that passed, record whether any
        unit is available, then admit the next waiting tickets, as many as the terms allow.
        Idempotent in time: steps run by many processes admit what one would."""
        ...

    async def state(self, product_id: ProductId) -> QueueState | None:
        """The queue in figures; None if nobody ever joined it."""
        ...
