"""The use cases of the command side: one async function per command, keyword-only deps.

Placing an order (the write path, top-down; docs/design.md says why in this order), once the
API has checked the request's shape:

1. ``place_order`` claims the request's Idempotency-Key (``_keys``): a retry of a request
   that was answered gets that answer, whatever changed since;
2. refuses at once an order of a product this process knows to be sold out;
3. prices the order as the server does (``_quote``; 422 on any mismatch);
4. hands it to the placement strategy (``placement``): the stock gate's reservation, one
   atomic step that also serialises the buyer's concurrent orders, then the group commit's
   transaction (``group_commit``), which also settles the reservation; or, for the lock
   strategy, the buyer's lock and product locks around one transaction;
5. records the answer under the key.

The database stays the source of truth; the stock gate only keeps doomed requests away from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from flashorder.application import _keys
from flashorder.application._quote import priced_order
from flashorder.application.catalogue import CatalogueCache
from flashorder.application.group_commit import OutcomeUnknown
from flashorder.application.placement import PlacedOrder, Placement
from flashorder.application.ports import (
    IdempotencyCache,
    Locks,
    StockGate,
    StockUnknown,
    UnitOfWorkFactory,
)
from flashorder.application.tracing import NO_TRACER, Tracer
from flashorder.domain import commands, errors
from flashorder.domain.model import (
    DEFAULT_PAY_WITHIN,
    DiscountPolicy,
    DiscountPolicyId,
    Product,
    ProductId,
    stock_changed,
)
from flashorder.domain.pricing import DeliveryRule

Clock = Callable[[], datetime]

__all__ = [
    "Deps",
    "PlacedOrder",
    "cancel_order",
    "change_product",
    "change_stock",
    "create_discount_policy",
    "create_product",
    "discount_policy_view",
    "place_order",
    "product_view",
    "queued_among",
    "refuse_off_sale",
    "sold_out_among",
]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Deps:
    """What the command handlers need; built once by the composition root."""

    uow: UnitOfWorkFactory
    stock: StockGate
    locks: Locks
    idempotency: IdempotencyCache
    #: How an order takes its stock (``ReservePlacement`` or ``LockPlacement``).
    placement: Placement
    catalogue: CatalogueCache = field(default_factory=CatalogueCache)
    clock: Clock = utc_now
    #: How long a buyer has to pay, for products that do not say (``payWithinSeconds``).
    pay_within: timedelta = DEFAULT_PAY_WITHIN
    #: How far a ``processing`` payment moves the deadline (once).
    payment_grace: timedelta = timedelta(minutes=5)
    #: Spans around the steps of an order (``NO_TRACER``: none, at no cost); the placement
    #: holds the same tracer.
    tracer: Tracer = NO_TRACER
    #: What delivery costs (the shop's rule; the buyer's figure is checked against it).
    delivery: DeliveryRule = field(default_factory=DeliveryRule)


async def sold_out_among(product_ids: Sequence[ProductId], *, deps: Deps) -> ProductId | None:
    """One of the products that this process knows to be sold out, or None: an order of it
    is refused before any reservation, lock or write."""
    return await deps.placement.known_sold_out(product_ids)


async def refuse_off_sale(product_ids: Sequence[ProductId], *, deps: Deps, keyed: bool) -> None:
    """Refuse an order outside a product's sale window from this process's catalogue cache:
    the crowd that comes before the start costs no database work and no Redis round trip.

    A keyed request is refused here only before the start, when no order of the product can
    exist yet; after the end it may be the retry of an order placed in time, which the
    handler answers from the key's record.
    """

    async def load(ids: Sequence[ProductId]) -> dict[ProductId, Product]:
        async with deps.uow() as uow:
            return await uow.products.get_many(ids)

    _check_windows((await deps.catalogue.products(product_ids, load)).values(), deps, keyed)


def refuse_known_off_sale(product_ids: Sequence[ProductId], *, deps: Deps, keyed: bool) -> None:
    """``refuse_off_sale`` for the products this process already holds, with no I/O at all:
    it runs before admission, so that the crowd waiting for a known product's start costs no
    rate-limit round trip either, while a product id never seen still pays admission before
    it costs a database read."""
    _check_windows(deps.catalogue.cached_products(product_ids), deps, keyed)


def queued_among(product_ids: Sequence[ProductId], *, deps: Deps) -> list[Product]:
    """The queued sales among ``product_ids``, from this process's catalogue cache (which
    ``refuse_off_sale`` just filled): their orders need an admission."""
    return [p for p in deps.catalogue.cached_products(product_ids) if p.queued]


def _check_windows(products: Iterable[Product], deps: Deps, keyed: bool) -> None:
    now = deps.clock()
    for product in products:
        try:
            product.check_on_sale(now)
        except errors.SaleEnded:
            if not keyed:
                raise


async def place_order(cmd: commands.PlaceOrder, *, deps: Deps) -> PlacedOrder:
    fp = _keys.fingerprint(cmd)
    # First, so that a retry gets the first answer even if prices changed since.
    replay = await _keys.begin(cmd, fp, deps.idempotency)
    if replay is not None:
        return replay
    try:
        placed = await _place(cmd, fp, deps=deps)
    except OutcomeUnknown as unknown:
        # The batch may still commit this order: its key is settled once the batch knows.
        _keys.finish_when_known(unknown.pending, deps.idempotency)
        raise asyncio.CancelledError from None
    except (errors.SoldOut, errors.LimitReached) as refusal:
        placed = await _keys.recorded_instead(
            refusal, cmd, fp, uow=deps.uow, cache=deps.idempotency
        )
    except BaseException:
        await _keys.abandon(cmd, deps.idempotency)
        raise
    await _keys.finish(cmd, fp, placed, deps.idempotency)
    return placed


async def _place(cmd: commands.PlaceOrder, fp: str, *, deps: Deps) -> PlacedOrder:
    gone = await deps.placement.known_sold_out([line.product_id for line in cmd.lines])
    if gone is not None:
        raise errors.SoldOut(gone)
    order, lines = await priced_order(
        cmd,
        uow=deps.uow,
        catalogue=deps.catalogue,
        now=deps.clock(),
        pay_within=deps.pay_within,
        delivery=deps.delivery,
    )
    return await deps.placement.place(
        order, lines, idempotency_key=cmd.idempotency_key, fingerprint=fp
    )


async def cancel_order(cmd: commands.CancelOrder, *, deps: Deps) -> dict[str, object]:
    """Cancel an order; a retry answers the cancelled order again and gives nothing back."""
    for _ in range(3):
        cancelled = await _cancel_once(cmd, deps=deps)
        if cancelled is not None:
            return cancelled
    raise errors.DuplicateInFlight(f"cancellation of order {cmd.order_id!r}")


async def _cancel_once(cmd: commands.CancelOrder, *, deps: Deps) -> dict[str, object] | None:
    """None when a concurrent writer changed the order first: the caller reads it again."""
    tracer = deps.tracer
    # As an order's write: the outbox rows carry this span, so the relay and the projector
    # continue the cancel's trace.
    with tracer.span("order.cancel"):
        async with deps.uow() as uow:
            order = await uow.orders.get(cmd.order_id, for_update=True)
            if order is None or (cmd.user_id is not None and order.user_id != cmd.user_id):
                raise errors.OrderNotFound(cmd.order_id)
            if order.cancel(deps.clock()):
                if tracer.enabled:
                    parent = tracer.traceparent()
                    order.events[:] = [replace(e, traceparent=parent) for e in order.events]
                if not await uow.orders.save(order):
                    return None
                # In product order, as place_order takes them, so that a cancel and an order
                # of the same products cannot deadlock.
                for line in sorted(order.lines, key=lambda ln: ln.product_id):
                    await uow.products.give_back_stock(line.product_id, line.quantity)
                    await uow.purchases.give_back(order.user_id, line.product_id, line.quantity)
                await uow.commit()
    # The database took the stock back exactly once (the version guard above). The gate
    # follows; its release is idempotent per order, so a retry of a cancel that committed but
    # died before this line is what puts the stock back there.
    await deps.stock.release(order.order_id)
    deps.placement.stock_changed([line.product_id for line in order.lines])
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
        sale_starts_at=cmd.sale_starts_at,
        sale_ends_at=cmd.sale_ends_at,
        pay_within_seconds=cmd.pay_within_seconds,
        queued=cmd.queued,
        queue_opens_at=cmd.queue_opens_at,
        admission_per_second=cmd.admission_per_second,
        delivery_fee=cmd.delivery_fee,
    )
    now = deps.clock()
    async with deps.uow() as uow:
        await uow.products.add(product, now)
        uow.record(stock_changed(product, at=now))
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
                uow.record(stock_changed(changed, at=now))
                await uow.commit()
        except BaseException:
            await deps.stock.adjust(cmd.product_id, -delta)
            raise
    deps.placement.stock_changed([cmd.product_id])
    return changed


async def change_product(cmd: commands.ChangeProduct, *, deps: Deps) -> Product:
    """Move a product's sale window, change its payment deadline or its delivery fee.

    This process's catalogue cache forgets the product at once; the other processes see the
    change when their entry lapses (``CatalogueCache``'s time-to-live).
    """
    unknown = cmd.changes - commands.CHANGEABLE
    if unknown:
        raise ValueError(f"not changeable: {sorted(unknown)}")
    async with deps.uow() as uow:
        product = await uow.products.get(cmd.product_id, for_update=True)
        if product is None:
            raise errors.ProductNotFound(cmd.product_id)
        # ``replace`` runs the product's own checks (an end before the start is refused).
        changed = replace(product, **{name: getattr(cmd, name) for name in cmd.changes})
        await uow.products.change_sale(changed, deps.clock())
        await uow.commit()
    deps.catalogue.forget([cmd.product_id])
    return changed


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
