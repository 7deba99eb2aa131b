"""Products, discount policies and the Order aggregate."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NewType

from flashorder.domain import errors
from flashorder.domain.events import ORDER_CANCELLED, ORDER_CREATED, STOCK_CHANGED, Event

ProductId = NewType("ProductId", str)
OrderId = NewType("OrderId", str)
UserId = NewType("UserId", str)
DiscountPolicyId = NewType("DiscountPolicyId", str)

#: Amounts are integers in the currency's smallest unit (the original's prices are whole won).
Money = int


class OrderStatus(StrEnum):
    CREATED = "CREATED"
    CANCELLED = "CANCELLED"


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

    @property
    def sold(self) -> int:
        return self.stock - self.available

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
    version: int = 1
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
        )
        order.events.append(order._event(ORDER_CREATED, at))
        return order

    @property
    def items_amount(self) -> Money:
        return sum(line.amount for line in self.lines)

    def cancel(self, at: datetime) -> bool:
        """Cancel once. Returns False when it was already cancelled (a retry)."""
        if self.status is OrderStatus.CANCELLED:
            return False
        self.status = OrderStatus.CANCELLED
        self.updated_at = at
        self.version += 1
        self.events.append(self._event(ORDER_CANCELLED, at))
        return True

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
