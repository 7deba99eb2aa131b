"""Commands: what a caller asks the service to do, in the imperative."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flashorder.domain.model import (
    DiscountKind,
    DiscountPolicyId,
    Money,
    OrderId,
    PaymentStatus,
    PaymentType,
    ProductId,
    UserId,
)
from flashorder.domain.pricing import RequestedLine


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    user_id: UserId
    lines: tuple[RequestedLine, ...]
    discount_policy_id: DiscountPolicyId | None
    discount_amount: Money | None
    delivery_fee: Money
    payment_amount: Money
    payment_type: PaymentType
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class CancelOrder:
    order_id: OrderId
    #: When set, only this user's order may be cancelled (others' look absent).
    user_id: UserId | None = None


@dataclass(frozen=True, slots=True)
class CreateProduct:
    product_id: ProductId
    name: str
    price: Money
    stock: int
    max_per_user: int | None = None
    sale_starts_at: datetime | None = None
    sale_ends_at: datetime | None = None
    pay_within_seconds: int | None = None
    queued: bool = False
    queue_opens_at: datetime | None = None
    admission_per_second: float | None = None
    delivery_fee: Money = 0


#: The fields of a product that ``ChangeProduct`` may change.
CHANGEABLE = frozenset(
    {
        "sale_starts_at",
        "sale_ends_at",
        "pay_within_seconds",
        "delivery_fee",
        "queued",
        "queue_opens_at",
        "admission_per_second",
    }
)


@dataclass(frozen=True, slots=True)
class ChangeProduct:
    """Change a product's sale window, payment deadline, delivery fee or waiting room. Only
    the fields named in ``changes`` change (None there clears one); the others keep theirs."""

    product_id: ProductId
    changes: frozenset[str]
    sale_starts_at: datetime | None = None
    sale_ends_at: datetime | None = None
    pay_within_seconds: int | None = None
    queued: bool = False
    queue_opens_at: datetime | None = None
    admission_per_second: float | None = None
    delivery_fee: Money = 0


@dataclass(frozen=True, slots=True)
class RecordPayment:
    """What the payment provider's webhook reports (its signature already checked)."""

    payment_ref: str
    order_id: OrderId
    amount: Money
    status: PaymentStatus


@dataclass(frozen=True, slots=True)
class ChangeStock:
    product_id: ProductId
    add: int | None = None
    set_to: int | None = None


@dataclass(frozen=True, slots=True)
class CreateDiscountPolicy:
    policy_id: DiscountPolicyId
    kind: DiscountKind
    value: int
    min_order_amount: Money = 0
    max_discount: Money | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
