"""Command handlers: one async function per command, keyword-only dependencies.

The write path of an order (docs/design.md), once the API has checked the request's shape:
claim the idempotency key (a retry gets the first answer, even if prices changed since) →
refuse products known to be sold out → price the order and check the client's figures →
per-user lock → atomic stock reservation (the ``lock`` strategy: per-product locks instead)
→ one database transaction → record the answer under the key → reply. The database stays
the source of truth; the stock gate only keeps doomed requests away from it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import uuid_utils

from flashorder.application.catalogue import CatalogueCache
from flashorder.application.group_commit import GroupCommit, PendingOrder
from flashorder.application.ports import (
    IdempotencyCache,
    Locks,
    ReservationLine,
    StockGate,
    StockUnknown,
    StoredResponse,
    UnitOfWorkFactory,
)
from flashorder.application.sold_out import SoldOutCache
from flashorder.domain import commands, errors
from flashorder.domain.model import (
    DiscountPolicy,
    DiscountPolicyId,
    Order,
    OrderId,
    Product,
    ProductId,
    UserId,
    stock_changed,
)
from flashorder.domain.pricing import DeliveryRule, check_quote

Clock = Callable[[], datetime]

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_order_id() -> OrderId:
    # UUIDv7: time-ordered, so the primary key index grows at its right edge and a user's
    # orders sort by creation without a second index.
    return OrderId(str(uuid_utils.uuid7()))


@dataclass(frozen=True, slots=True)
class Deps:
    """What the command handlers need; built once by the composition root."""

    uow: UnitOfWorkFactory
    stock: StockGate
    locks: Locks
    idempotency: IdempotencyCache
    catalogue: CatalogueCache = field(default_factory=CatalogueCache)
    #: Group commit of orders (None: one transaction per order).
    writer: GroupCommit | None = None
    clock: Clock = utc_now
    #: ``reserve`` (the gate, then one guarded transaction) or ``lock`` (the original design).
    strategy: str = "reserve"
    #: How long the lock strategy waits for a product's lock (its queue can be long).
    product_lock_wait: float = 30.0
    #: Refuses orders of sold-out products before any work (the reserve strategy only: the
    #: lock strategy is the original design, kept as it was).
    sold_out: SoldOutCache | None = None
    #: What delivery costs (the shop's rule; the buyer's figure is checked against it).
    delivery: DeliveryRule = field(default_factory=DeliveryRule)


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """The answer to PlaceOrder. ``replayed`` is True when an idempotent retry got it."""

    status_code: int
    body: dict[str, object]
    replayed: bool = False


def fingerprint(cmd: commands.PlaceOrder) -> str:
    """A digest of everything in the request that changes its meaning (not the key itself)."""
    canonical = orjson.dumps(
        {
            "lines": [[ln.product_id, ln.quantity, ln.product_price] for ln in cmd.lines],
            "discountPolicyId": cmd.discount_policy_id,
            "discountAmount": cmd.discount_amount,
            "deliveryFee": cmd.delivery_fee,
            "paymentAmount": cmd.payment_amount,
            "paymentType": cmd.payment_type.value,
        }
    )
    return hashlib.sha256(canonical).hexdigest()


async def sold_out_among(product_ids: Sequence[ProductId], *, deps: Deps) -> ProductId | None:
    """One of the products that this process knows to be sold out, or None (see
    ``SoldOutCache``): an order of it is refused before any reservation, lock or write."""
    if deps.sold_out is None or deps.strategy != "reserve":
        return None
    return await deps.sold_out.first_sold_out(product_ids)


async def place_order(cmd: commands.PlaceOrder, *, deps: Deps) -> PlacedOrder:
    key = cmd.idempotency_key
    fp = fingerprint(cmd) if key is not None else ""
    if key is not None:
        # First, so that a retry gets the first answer even if prices changed since.
        stored = await deps.idempotency.begin(cmd.user_id, key, fp)
        if stored is not None:
            return PlacedOrder(stored.status_code, stored.body, replayed=True)
    try:
        gone = await sold_out_among([line.product_id for line in cmd.lines], deps=deps)
        if gone is not None:
            raise errors.SoldOut(gone)
        order, reservation = await _priced_order(cmd, deps=deps)
        async with deps.locks.hold(f"user:{cmd.user_id}"):
            if deps.strategy == "lock":
                placed = await _lock_and_commit(order, reservation, cmd, fp, deps=deps)
            else:
                placed = await _reserve_and_commit(order, reservation, cmd, fp, deps=deps)
    except _OutcomeUnknown:
        # The batch may still commit this order. The key stays claimed and is settled with
        # the reservation once the batch knows (``_settle_outcome``): abandoned now, a retry
        # with the same key could be refused as sold out for an order that was placed.
        raise asyncio.CancelledError from None
    except (errors.SoldOut, errors.LimitReached):
        if key is None:
            raise
        # A retry of an order that was placed but whose answer was lost (its worker died
        # after the commit, Redis lost the cached answer) meets the product sold out or the
        # limit reached, by that very order perhaps: the database's record of the key is the
        # answer, not the refusal. Only refusals of keyed requests pay this one read.
        try:
            recorded = await _recorded_answer(cmd.user_id, key, fp, deps=deps)
        except BaseException:
            await deps.idempotency.abandon(cmd.user_id, key)
            raise
        if recorded is None:
            await deps.idempotency.abandon(cmd.user_id, key)
            raise
        placed = PlacedOrder(recorded.status_code, recorded.body, replayed=True)
    except BaseException:
        if key is not None:
            await deps.idempotency.abandon(cmd.user_id, key)
        raise
    if key is not None:
        try:
            await deps.idempotency.finish(
                cmd.user_id, key, StoredResponse(fp, placed.status_code, placed.body)
            )
        except errors.Unavailable:
            # The order and its idempotency record are committed; a retry that finds the
            # cache without the answer is answered from the database.
            log.warning("idempotency.finish_failed", extra={"user_id": cmd.user_id})
    return placed


async def _recorded_answer(
    user_id: UserId, key: str, fp: str, *, deps: Deps
) -> StoredResponse | None:
    """The durable answer to an idempotency key, if an earlier request committed one."""
    async with deps.uow() as uow:
        recorded = await uow.idempotency.get(user_id, key)
    if recorded is not None and recorded.fingerprint != fp:
        raise errors.IdempotencyKeyReused()
    return recorded


async def _priced_order(
    cmd: commands.PlaceOrder, *, deps: Deps
) -> tuple[Order, list[ReservationLine]]:
    """The order as the server prices it; any figure of the client's that differs is a 422."""
    now = deps.clock()

    async def load_products(ids: Sequence[ProductId]) -> dict[ProductId, Product]:
        async with deps.uow() as uow:
            return await uow.products.get_many(ids)

    catalogue = await deps.catalogue.products(
        [line.product_id for line in cmd.lines], load_products
    )
    policy = await _policy(cmd, deps=deps)
    quote = check_quote(
        requested=cmd.lines,
        catalogue=catalogue,
        policy=policy,
        claimed_discount=cmd.discount_amount,
        delivery_fee=cmd.delivery_fee,
        claimed_payment=cmd.payment_amount,
        at=now,
        delivery=deps.delivery,
    )
    order = Order.place(
        order_id=new_order_id(),
        user_id=cmd.user_id,
        lines=quote.lines,
        discount_policy_id=cmd.discount_policy_id,
        discount_amount=quote.discount_amount,
        delivery_fee=quote.delivery_fee,
        payment_amount=quote.payment_amount,
        payment_type=cmd.payment_type,
        at=now,
    )
    reservation = [
        ReservationLine(line.product_id, line.quantity, catalogue[line.product_id].max_per_user)
        for line in quote.lines
    ]
    return order, reservation


async def _reserve_and_commit(
    order: Order,
    reservation: list[ReservationLine],
    cmd: commands.PlaceOrder,
    fp: str,
    *,
    deps: Deps,
) -> PlacedOrder:
    try:
        await _reserve(order.order_id, order.user_id, reservation, deps=deps)
    except errors.SoldOut as exc:
        # Perhaps sold out just now: the next order reads the count again.
        _stock_changed(deps, [ProductId(exc.product_id)])
        raise
    pending = PendingOrder(order, reservation, cmd.idempotency_key, fp, order.snapshot())
    try:
        replay = await _write(pending, deps=deps)
    except _OutcomeUnknown:
        raise
    except BaseException:
        # The transaction did not commit (sold out in the database, a conflict, the
        # database down): the reservation goes back.
        await deps.stock.release(order.order_id)
        raise
    if replay is not None or deps.writer is None:
        # The group commit confirms the reservations of the orders it commits itself.
        await _settle(order.order_id, replay, deps=deps)
    if replay is not None:
        return PlacedOrder(replay.status_code, replay.body, replayed=True)
    return PlacedOrder(201, pending.body)


class _OutcomeUnknown(Exception):
    """The caller was cancelled while its order was being written."""


async def _write(pending: PendingOrder, *, deps: Deps) -> StoredResponse | None:
    if deps.writer is None:
        return await commit_order(pending, uow=deps.uow)
    done = deps.writer.submit(pending)
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        # The batch may still commit this order. Its reservation is settled when the batch
        # knows, not now: releasing it here could hand out stock the database has taken.
        done.add_done_callback(lambda f: _background(_settle_outcome(pending, f, deps=deps)))
        raise _OutcomeUnknown from None


async def _settle(order_id: OrderId, replay: StoredResponse | None, *, deps: Deps) -> None:
    """After the write: confirm a committed order's reservation, release a replayed one."""
    try:
        if replay is not None:
            await deps.stock.release(order_id)
        else:
            await deps.stock.confirm(order_id)
    except errors.Unavailable:
        # The database already decided; reconciliation brings the gate in line with it.
        log.warning("reservation.settle_failed", extra={"order_id": order_id})


async def _settle_outcome(
    pending: PendingOrder, done: asyncio.Future[StoredResponse | None], *, deps: Deps
) -> None:
    """Settle the reservation and the idempotency key of an order whose caller gave up."""
    order_id, user_id, key = (
        pending.order.order_id,
        pending.order.user_id,
        pending.idempotency_key,
    )
    if done.cancelled() or done.exception() is not None:
        await deps.stock.release(order_id)
        if key is not None:
            await deps.idempotency.abandon(user_id, key)
        return
    replay = done.result()
    await _settle(order_id, replay, deps=deps)
    if key is not None:
        answer = replay or StoredResponse(pending.fingerprint, 201, pending.body)
        try:
            await deps.idempotency.finish(user_id, key, answer)
        except errors.Unavailable:
            # The claim lapses with its lease; a later retry is then answered from the
            # database's record only if the gate lets it that far.
            log.warning("idempotency.finish_failed", extra={"user_id": user_id})


_background_tasks: set[asyncio.Task[None]] = set()


def _background(work: Awaitable[None]) -> None:
    task: asyncio.Task[None] = asyncio.ensure_future(work)
    # Held until done: the loop keeps only weak references to tasks.
    _background_tasks.add(task)
    task.add_done_callback(_background_tasks.discard)


async def _lock_and_commit(
    order: Order,
    reservation: list[ReservationLine],
    cmd: commands.PlaceOrder,
    fp: str,
    *,
    deps: Deps,
) -> PlacedOrder:
    """The original design, kept as the benchmark's baseline and at its best: one
    distributed lock per product (taken in product order; waiters are woken on release,
    not by polling) around a transaction that reads the stock ``FOR UPDATE``, checks it and
    writes. Every order of a hot product queues on its lock and then on its row."""
    async with AsyncExitStack() as held:
        for line in sorted(reservation, key=lambda ln: ln.product_id):
            await held.enter_async_context(
                deps.locks.hold(f"product:{line.product_id}", wait=deps.product_lock_wait)
            )
        pending = PendingOrder(order, reservation, cmd.idempotency_key, fp, order.snapshot())
        replay = await commit_order(pending, uow=deps.uow, lock_rows=True)
    if replay is not None:
        return PlacedOrder(replay.status_code, replay.body, replayed=True)
    return PlacedOrder(201, pending.body)


async def _policy(cmd: commands.PlaceOrder, *, deps: Deps) -> DiscountPolicy | None:
    if cmd.discount_policy_id is None:
        return None

    async def load(policy_id: DiscountPolicyId) -> DiscountPolicy | None:
        async with deps.uow() as uow:
            return await uow.discounts.get(policy_id)

    policy = await deps.catalogue.policy(cmd.discount_policy_id, load)
    if policy is None:
        raise errors.UnknownReference("discount policy", cmd.discount_policy_id)
    return policy


async def _reserve(
    order_id: OrderId, user_id: UserId, lines: Sequence[ReservationLine], *, deps: Deps
) -> None:
    try:
        await deps.stock.reserve(order_id, user_id, lines)
    except StockUnknown:
        # The gate lost its counts (a fresh or restarted Redis): prime it from the database.
        # Priming only sets a missing count, so concurrent primers agree; the guarded update
        # in the transaction still refuses anything the database cannot honour.
        async with deps.uow() as uow:
            products = await uow.products.get_many([line.product_id for line in lines])
        for product in products.values():
            await deps.stock.prime(product.product_id, product.available)
        await deps.stock.reserve(order_id, user_id, lines)


async def commit_order(
    pending: PendingOrder, *, uow: UnitOfWorkFactory, lock_rows: bool = False
) -> StoredResponse | None:
    """Write one order in its own transaction. Returns a stored response to replay instead,
    when the idempotency key turned out to be recorded already (the cache had lost it).

    ``lock_rows`` reads and checks each product ``FOR UPDATE`` first (the lock strategy)."""
    order, reservation, key, fp = (
        pending.order,
        pending.reservation,
        pending.idempotency_key,
        pending.fingerprint,
    )
    async with uow() as work:
        if lock_rows:
            for line in sorted(reservation, key=lambda ln: ln.product_id):
                product = await work.products.get(line.product_id, for_update=True)
                if product is None or product.available < line.quantity:
                    raise errors.SoldOut(line.product_id)
        await work.orders.add(order)
        for line in reservation:
            if line.max_per_user is not None and not await work.purchases.take(
                order.user_id, line.product_id, line.quantity, line.max_per_user
            ):
                raise errors.LimitReached(line.product_id, line.max_per_user)
        if key is not None:
            try:
                await work.idempotency.add(
                    order.user_id,
                    key,
                    StoredResponse(fp, 201, pending.body),
                    order.created_at,
                )
            except errors.AlreadyExists:
                recorded = await work.idempotency.get(order.user_id, key)
                if recorded is None or recorded.fingerprint != fp:
                    raise errors.IdempotencyKeyReused() from None
                return recorded
        # The hot rows go last: every other write is done, so their locks are held only for
        # the updates and the commit. In product order, so that two orders of the same
        # products cannot deadlock.
        for line in sorted(reservation, key=lambda ln: ln.product_id):
            if not await work.products.take_stock(line.product_id, line.quantity):
                raise errors.SoldOut(line.product_id)
        await work.commit()
    return None


async def cancel_order(cmd: commands.CancelOrder, *, deps: Deps) -> dict[str, object]:
    """Cancel an order; a retry answers the cancelled order again and gives nothing back."""
    for _ in range(3):
        cancelled = await _cancel_once(cmd, deps=deps)
        if cancelled is not None:
            return cancelled
    raise errors.DuplicateInFlight(f"cancellation of order {cmd.order_id!r}")


async def _cancel_once(cmd: commands.CancelOrder, *, deps: Deps) -> dict[str, object] | None:
    """None when a concurrent writer changed the order first: the caller reads it again."""
    async with deps.uow() as uow:
        order = await uow.orders.get(cmd.order_id, for_update=True)
        if order is None or (cmd.user_id is not None and order.user_id != cmd.user_id):
            raise errors.OrderNotFound(cmd.order_id)
        if order.cancel(deps.clock()):
            if not await uow.orders.save(order):
                return None
            # In product order, as place_order takes them, so that a cancel and an order of
            # the same products cannot deadlock.
            for line in sorted(order.lines, key=lambda ln: ln.product_id):
                await uow.products.give_back_stock(line.product_id, line.quantity)
                await uow.purchases.give_back(order.user_id, line.product_id, line.quantity)
            await uow.commit()
    # The database took the stock back exactly once (the version guard above). The gate
    # follows; its release is idempotent per order, so a retry of a cancel that committed but
    # died before this line is what puts the stock back there.
    await deps.stock.release(order.order_id)
    _stock_changed(deps, [line.product_id for line in order.lines])
    return order.snapshot()


async def create_product(cmd: commands.CreateProduct, *, deps: Deps) -> Product:
    if cmd.stock < 0 or cmd.price < 0:
        raise errors.InvalidOrder("price and stock cannot be negative")
    if cmd.max_per_user is not None and cmd.max_per_user <= 0:
        raise errors.InvalidOrder("maxPerUser must be positive")
    product = Product(
        product_id=cmd.product_id,
        name=cmd.name,
        price=cmd.price,
        stock=cmd.stock,
        available=cmd.stock,
        max_per_user=cmd.max_per_user,
    )
    now = deps.clock()
    async with deps.uow() as uow:
        await uow.products.add(product, now)
        await uow.outbox.add([stock_changed(product, at=now)])
        await uow.commit()
    await deps.stock.put(product.product_id, product.available)
    return product


async def change_stock(cmd: commands.ChangeStock, *, deps: Deps) -> Product:
    """Add to or set the stock mid-sale.

    The gate moves first: it refuses a cut below what is reserved there (committed or in
    flight), which the database alone cannot see. Then the database applies the same delta
    under its own guard; if that fails, the gate is moved back.
    """
    async with deps.locks.hold(f"stock:{cmd.product_id}"):
        async with deps.uow() as uow:
            product = await uow.products.get(cmd.product_id)
        if product is None:
            raise errors.ProductNotFound(cmd.product_id)
        delta = product.stock_change(add=cmd.add, set_to=cmd.set_to)
        try:
            await deps.stock.adjust(cmd.product_id, delta)
        except StockUnknown:
            await deps.stock.prime(cmd.product_id, product.available)
            await deps.stock.adjust(cmd.product_id, delta)
        try:
            now = deps.clock()
            async with deps.uow() as uow:
                changed = await uow.products.change_stock(cmd.product_id, delta, now)
                if changed is None:
                    raise errors.StockBelowCommitted(cmd.product_id, product.sold)
                await uow.outbox.add([stock_changed(changed, at=now)])
                await uow.commit()
        except BaseException:
            await deps.stock.adjust(cmd.product_id, -delta)
            raise
    _stock_changed(deps, [cmd.product_id])
    return changed


def _stock_changed(deps: Deps, product_ids: Sequence[ProductId]) -> None:
    # This process knows at once; the others within their sold-out cache's time-to-live.
    if deps.sold_out is not None:
        deps.sold_out.forget(product_ids)


async def create_discount_policy(
    cmd: commands.CreateDiscountPolicy, *, deps: Deps
) -> DiscountPolicy:
    policy = DiscountPolicy(
        policy_id=cmd.policy_id,
        kind=cmd.kind,
        value=cmd.value,
        min_order_amount=cmd.min_order_amount,
        max_discount=cmd.max_discount,
        valid_from=cmd.valid_from,
        valid_until=cmd.valid_until,
    )
    async with deps.uow() as uow:
        await uow.discounts.add(policy)
        await uow.commit()
    return policy


async def product_view(product_id: ProductId, *, deps: Deps) -> Product:
    async with deps.uow() as uow:
        product = await uow.products.get(product_id)
    if product is None:
        raise errors.ProductNotFound(product_id)
    return product


async def discount_policy_view(policy_id: DiscountPolicyId, *, deps: Deps) -> DiscountPolicy:
    async with deps.uow() as uow:
        policy = await uow.discounts.get(policy_id)
    if policy is None:
        raise errors.DiscountPolicyNotFound(policy_id)
    return policy
