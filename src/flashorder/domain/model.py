"""Products, discount policies and the Order aggregate."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NewType

from flashorder.domain import errors
from flashorder.domain.events import (
    ORDER_CANCELLED,
    ORDER_CREATED,
    ORDER_DEADLINE_EXTENDED,
    ORDER_EXPIRED,
    ORDER_PAID,
    PAYMENT_REFUND_DUE,
    STOCK_CHANGED,
    Event,
)

ProductId = NewType("ProductId", str)
OrderId = NewType("OrderId", str)
UserId = NewType("UserId", str)
DiscountPolicyId = NewType("DiscountPolicyId", str)

#: Amounts are integers in the currency's smallest unit (the original's prices are whole won).
Money = int


#: How long a buyer has to pay when neither the product nor the settings say otherwise.
DEFAULT_PAY_WITHIN = timedelta(minutes=10)


class OrderStatus(StrEnum):
    """CREATED (holds its units until ``payBy``) → PAID | CANCELLED | EXPIRED;
    PAID → CANCELLED (a refund is due). CANCELLED and EXPIRED are final."""

    CREATED = "CREATED"
    PAID = "PAID"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"

    @property
    def holds_stock(self) -> bool:
        """Its units are out of ``available``: paid for, or held until the deadline."""
        return self in (OrderStatus.CREATED, OrderStatus.PAID)


class PaymentStatus(StrEnum):
    """What the payment provider reports about a payment of an order."""

    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class PaymentOutcome(StrEnum):
    """What a payment event did to its order."""

    #: CREATED → PAID.
    PAID = "paid"
    #: ``processing``: the deadline moved once, by the grace period.
    EXTENDED = "extended"
    #: Nothing to do: ``failed`` (the order waits for its deadline), ``processing`` again.
    UNCHANGED = "unchanged"
    #: Money arrived for an order that no longer waits for it (expired, cancelled, or paid
    #: by another payment): it is announced for a refund, the order stays as it is.
    REFUND_DUE = "refund-due"


class PaymentType(StrEnum):
    CREDIT = "CREDIT"
    DEBIT = "DEBIT"
    BANK_TRANSFER = "BANK_TRANSFER"
    VIRTUAL_ACCOUNT = "VIRTUAL_ACCOUNT"
    MOBILE = "MOBILE"
    POINT = "POINT"


class DiscountKind(StrEnum):
    FIXED = "FIXED"
    PERCENT = "PERCENT"


@dataclass(frozen=True, slots=True)
class Product:
    """A product on sale. ``available`` is what can still be ordered; the rest is sold.

    Invariant: ``0 <= available <= stock``.
    """

    product_id: ProductId
    name: str
    price: Money
    stock: int
    available: int
    max_per_user: int | None = None
    #: Bumped by every stock change; orders the product's events.
    version: int = 1
    #: The sale window: orders before ``sale_starts_at`` or from ``sale_ends_at`` on are
    #: refused. None: no bound on that side.
    sale_starts_at: datetime | None = None
    sale_ends_at: datetime | None = None
    #: Seconds a buyer has to pay for an order of it; None: the service's default.
    pay_within_seconds: int | None = None
    #: A queued sale: orders need an admission token from the waiting room
    #: (``domain/queue.py``); buyers may join it from ``queue_opens_at`` (None: at once) and
    #: are admitted at ``admission_per_second`` (None: as fast as admitted buyers order).
    queued: bool = False
    queue_opens_at: datetime | None = None
    admission_per_second: float | None = None
    #: What delivering it costs at least (bulky, chilled...): an order's fee is the highest of
    #: its products' fees and the shop's flat fee (``pricing.DeliveryRule``). 0: nothing more.
    delivery_fee: Money = 0

    def __post_init__(self) -> None:
        if (
            self.sale_starts_at is not None
            and self.sale_ends_at is not None
            and self.sale_ends_at <= self.sale_starts_at
        ):
            raise errors.InvalidOrder("saleEndsAt must be after saleStartsAt")
        if self.pay_within_seconds is not None and self.pay_within_seconds < 1:
            raise errors.InvalidOrder("payWithinSeconds must be at least 1")
        if self.queued and self.sale_starts_at is None:
            raise errors.InvalidOrder("a queued sale needs saleStartsAt: the draw is at the start")
        if (
            self.queue_opens_at is not None
            and self.sale_starts_at is not None
            and self.queue_opens_at > self.sale_starts_at
        ):
            raise errors.InvalidOrder("queueOpensAt must not be after saleStartsAt")
        if self.admission_per_second is not None and self.admission_per_second <= 0:
            raise errors.InvalidOrder("admissionPerSecond must be positive")
        if self.delivery_fee < 0:
            raise errors.InvalidOrder("deliveryFee cannot be negative")

    @property
    def sold(self) -> int:
        """Units of live orders: paid ones and unpaid holds (``stock - available``)."""
        return self.stock - self.available

    def check_on_sale(self, at: datetime) -> None:
        """Raises SaleNotStarted or SaleEnded when ``at`` is outside the sale window."""
        if self.sale_starts_at is not None and at < self.sale_starts_at:
            raise errors.SaleNotStarted(self.product_id, self.sale_starts_at, at)
        if self.sale_ends_at is not None and at >= self.sale_ends_at:
            raise errors.SaleEnded(self.product_id, self.sale_ends_at)

    def pay_within(self, default: timedelta) -> timedelta:
        if self.pay_within_seconds is None:
            return default
        return timedelta(seconds=self.pay_within_seconds)

    def stock_change(self, *, add: int | None = None, set_to: int | None = None) -> int:
        """The delta that adds ``add`` units or sets the stock to ``set_to``.

        Setting below what is already sold is refused: that would turn sold orders into oversell.
        """
        if (add is None) == (set_to is None):
            raise errors.InvalidOrder("give exactly one of add and set")
        delta = add if add is not None else (set_to or 0) - self.stock
        if self.stock + delta < self.sold:
            raise errors.StockBelowCommitted(self.product_id, self.sold)
        return delta


def stock_changed(product: Product, *, at: datetime) -> Event:
    return Event(
        type=STOCK_CHANGED,
        aggregate_id=product.product_id,
        aggregate_version=product.version,
        occurred_at=at,
        payload={
            "productId": product.product_id,
            "stock": product.stock,
            "available": product.available,
        },
    )


@dataclass(frozen=True, slots=True)
class DiscountPolicy:
    """A discount as data: a fixed amount or a whole percentage, with optional conditions."""

    policy_id: DiscountPolicyId
    kind: DiscountKind
    value: int
    min_order_amount: Money = 0
    max_discount: Money | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None

    def __post_init__(self) -> None:
        if self.value <= 0 or (self.kind is DiscountKind.PERCENT and self.value > 100):
            raise errors.InvalidOrder("a discount is a positive amount or a percentage 1..100")

    def discount_for(self, subtotal: Money, at: datetime) -> Money:
        if self.valid_from is not None and at < self.valid_from:
            raise errors.DiscountNotApplicable(f"discount {self.policy_id!r} is not active yet")
        if self.valid_until is not None and at >= self.valid_until:
            raise errors.DiscountNotApplicable(f"discount {self.policy_id!r} has expired")
        if subtotal < self.min_order_amount:
            raise errors.DiscountNotApplicable(
                f"discount {self.policy_id!r} needs an order of at least {self.min_order_amount}"
            )
        if self.kind is DiscountKind.FIXED:
            amount = self.value
        else:
            # Round down: the customer never gets more than the stated percentage.
            amount = subtotal * self.value // 100
        if self.max_discount is not None:
            amount = min(amount, self.max_discount)
        return min(amount, subtotal)


@dataclass(frozen=True, slots=True)
class OrderLine:
    product_id: ProductId
    quantity: int
    unit_price: Money

    @property
    def amount(self) -> Money:
        return self.quantity * self.unit_price


@dataclass(slots=True)
class Order:
    """The Order aggregate. It records events; it never publishes them."""

    order_id: OrderId
    user_id: UserId
    lines: tuple[OrderLine, ...]
    discount_policy_id: DiscountPolicyId | None
    discount_amount: Money
    delivery_fee: Money
    payment_amount: Money
    payment_type: PaymentType
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    #: Unpaid by then, the order expires and its units go back on sale.
    pay_by: datetime
    version: int = 1
    paid_at: datetime | None = None
    #: The provider's id of the payment that paid it (what a refund refers to).
    payment_ref: str | None = None
    #: A ``processing`` payment extends the deadline once, never again.
    deadline_extended: bool = False
    #: The status the order had when it was loaded: a save is guarded by it and by the
    #: version, so of two writers that loaded the same state only the first one's write lands.
    loaded_status: OrderStatus | None = field(default=None, compare=False, repr=False)
    events: list[Event] = field(default_factory=list)

    @classmethod
    def place(
        cls,
        *,
        order_id: OrderId,
        user_id: UserId,
        lines: tuple[OrderLine, ...],
        discount_policy_id: DiscountPolicyId | None,
        discount_amount: Money,
        delivery_fee: Money,
        payment_amount: Money,
        payment_type: PaymentType,
        at: datetime,
        pay_within: timedelta = DEFAULT_PAY_WITHIN,
    ) -> Order:
        order = cls(
            order_id=order_id,
            user_id=user_id,
            lines=lines,
            discount_policy_id=discount_policy_id,
            discount_amount=discount_amount,
            delivery_fee=delivery_fee,
            payment_amount=payment_amount,
            payment_type=payment_type,
            status=OrderStatus.CREATED,
            created_at=at,
            updated_at=at,
            pay_by=at + pay_within,
        )
        order.events.append(order._event(ORDER_CREATED, at))
        return order

    @property
    def items_amount(self) -> Money:
        return sum(line.amount for line in self.lines)

    @property
    def guard_status(self) -> OrderStatus:
        """The status a save expects to find stored (see ``loaded_status``)."""
        return self.loaded_status if self.loaded_status is not None else self.status

    def cancel(self, at: datetime) -> bool:
        """Cancel once; a paid order's money is announced for a refund.

        Returns False when it was already cancelled (a retry). Raises OrderStateConflict
        for an expired order: there is nothing left to cancel.
        """
        if self.status is OrderStatus.CANCELLED:
            return False
        if self.status is OrderStatus.EXPIRED:
            raise errors.OrderStateConflict(self.order_id, self.status.value, "cancelled")
        was_paid = self.status is OrderStatus.PAID
        self._become(OrderStatus.CANCELLED, at)
        self.events.append(self._event(ORDER_CANCELLED, at))
        if was_paid:
            self.events.append(self._refund_due("cancelled-after-payment", self.payment_ref, at))
        return True

    def expire(self, at: datetime) -> bool:
        """CREATED and past ``pay_by`` → EXPIRED. False when it is not due or not waiting."""
        if self.status is not OrderStatus.CREATED or at < self.pay_by:
            return False
        self._become(OrderStatus.EXPIRED, at)
        self.events.append(self._event(ORDER_EXPIRED, at))
        return True

    def record_payment(
        self,
        *,
        status: PaymentStatus,
        amount: Money,
        payment_ref: str,
        at: datetime,
        grace: timedelta,
    ) -> PaymentOutcome:
        """Apply what the payment provider reports. Raises PaymentAmountMismatch (nothing
        changes) when the amount is not what the order costs."""
        if amount != self.payment_amount:
            raise errors.PaymentAmountMismatch(self.order_id, self.payment_amount, amount)
        waiting = self.status is OrderStatus.CREATED
        if status is PaymentStatus.SUCCEEDED:
            if not waiting:
                # Expired, cancelled, or paid already by another payment: the money goes
                # back; the order is never revived.
                self.events.append(self._refund_due("late-payment", payment_ref, at))
                return PaymentOutcome.REFUND_DUE
            self._become(OrderStatus.PAID, at)
            self.paid_at, self.payment_ref = at, payment_ref
            self.events.append(self._event(ORDER_PAID, at))
            return PaymentOutcome.PAID
        if status is PaymentStatus.PROCESSING and waiting and not self.deadline_extended:
            # A payment in flight must not be expired under the buyer: once, the deadline
            # moves to at least the grace period from now.
            self._become(OrderStatus.CREATED, at)
            self.pay_by = max(self.pay_by, at + grace)
            self.deadline_extended = True
            self.events.append(self._event(ORDER_DEADLINE_EXTENDED, at))
            return PaymentOutcome.EXTENDED
        return PaymentOutcome.UNCHANGED

    def _become(self, status: OrderStatus, at: datetime) -> None:
        if self.loaded_status is None:
            self.loaded_status = self.status
        self.status = status
        self.updated_at = at
        self.version += 1

    def snapshot(self) -> dict[str, Any]:
        """The order as the wire and the events carry it (camelCase, ISO times)."""
        return {
            "orderId": self.order_id,
            "userId": self.user_id,
            "status": self.status.value,
            "items": [
                {
                    "productId": line.product_id,
                    "quantity": line.quantity,
                    "productPrice": line.unit_price,
                    "amount": line.amount,
                }
                for line in self.lines
            ],
            "itemsAmount": self.items_amount,
            "discountPolicyId": self.discount_policy_id,
            "discountAmount": self.discount_amount,
            "deliveryFee": self.delivery_fee,
            "paymentAmount": self.payment_amount,
            "paymentType": self.payment_type.value,
            "version": self.version,
            "payBy": self.pay_by.isoformat(),
            "paidAt": None if self.paid_at is None else self.paid_at.isoformat(),
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
        }

    def _event(self, type_: str, at: datetime) -> Event:
        return Event(
            type=type_,
            aggregate_id=self.order_id,
            aggregate_version=self.version,
            occurred_at=at,
            payload=self.snapshot(),
        )

    def _refund_due(self, reason: str, payment_ref: str | None, at: datetime) -> Event:
        # Not a change of the order: it carries the order's current version, and the read
        # model's views ignore it.
        return Event(
            type=PAYMENT_REFUND_DUE,
            aggregate_id=self.order_id,
            aggregate_version=self.version,
            occurred_at=at,
            payload={
                "orderId": self.order_id,
                "userId": self.user_id,
                "amount": self.payment_amount,
                "reason": reason,
                "paymentRef": payment_ref,
                "orderStatus": self.status.value,
            },
        )
