"""Wire models: camelCase JSON, bounded so that no value can hurt the service.

Requests (``…In``) refuse unknown members: a misspelt optional field must not pass unseen.
Responses (``…Out`` and the rest) do not declare themselves closed: a member added to a
response is a compatible change (docs/api.md), which a client generated from today's
description must be able to read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from flashorder.domain.model import (
    DiscountKind,
    OrderStatus,
    PaymentOutcome,
    PaymentStatus,
    PaymentType,
)

#: Identifiers as the original uses them (``PRD_240701120000001_0001_101``, ``test1234``).
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@\-]+$")]
#: Money in the currency's smallest unit; the bound keeps sums far from any overflow.
Amount = Annotated[int, Field(ge=0, le=10**12)]
Count = Annotated[int, Field(ge=0, le=10**9)]
PerSecond = Annotated[float, Field(gt=0, le=10**6)]
# Models are strict ("1" is not 1), but FastAPI validates decoded JSON, where enums and times
# can only arrive as strings: those fields take their string form.
Payment = Annotated[PaymentType, Field(strict=False)]
Kind = Annotated[DiscountKind, Field(strict=False)]


def _storable(value: datetime) -> datetime:
    # The database keeps UTC: an instant that has none (year 9999 at UTC-14:00) is refused
    # here, with a 422, rather than overflowing where it is stored.
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None
    return value


Instant = Annotated[AwareDatetime, Field(strict=False), AfterValidator(_storable)]
PayStatus = Annotated[PaymentStatus, Field(strict=False)]
#: Seconds a buyer has to pay (a week at most).
PayWithin = Annotated[int, Field(ge=1, le=7 * 86_400)]


class Wire(BaseModel):
    """A request body."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
    )


class WireOut(BaseModel):
    """A response body."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class OrderItemIn(Wire):
    product_id: Ident
    quantity: Annotated[int, Field(ge=1, le=10**6)]
    product_price: Amount


class PlaceOrderIn(Wire):
    """The original's order request, as written."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "userId": "test1234",
                    "items": [
                        {
                            "productId": "PRD_240701120000001_0001_101",
                            "quantity": 1,
                            "productPrice": 10050,
                        }
                    ],
                    "discountPolicyId": None,
                    "discountAmount": None,
                    "deliveryFee": 0,
                    "paymentAmount": 10050,
                    "paymentType": "CREDIT",
                }
            ]
        }
    )

    user_id: Ident
    items: Annotated[list[OrderItemIn], Field(min_length=1, max_length=1000)]
    discount_policy_id: Ident | None = None
    discount_amount: Amount | None = None
    #: The shop's fee (``FLASHORDER_DELIVERY_FEE``, free from ``_DELIVERY_FREE_FROM``): any
    #: other figure is a 422 price-mismatch.
    delivery_fee: Amount = 0
    payment_amount: Amount
    payment_type: Payment


class OrderItemOut(WireOut):
    product_id: str
    quantity: int
    product_price: int
    amount: int


class OrderOut(WireOut):
    order_id: str
    user_id: str
    status: OrderStatus
    items: list[OrderItemOut]
    items_amount: int
    discount_policy_id: str | None
    discount_amount: int
    delivery_fee: int
    payment_amount: int
    payment_type: PaymentType
    version: int
    #: Unpaid by then, the order expires and its units go back on sale.
    pay_by: datetime
    paid_at: datetime | None
    created_at: datetime
    updated_at: datetime


class OrderPage(WireOut):
    items: list[OrderOut]
    next_cursor: str | None


class ProductIn(Wire):
    product_id: Ident
    name: Annotated[str, Field(min_length=1, max_length=200)]
    price: Amount
    stock: Count
    max_per_user: Annotated[int, Field(ge=1, le=10**6)] | None = None
    #: The sale window, with a time zone; orders outside it are refused (409).
    sale_starts_at: Instant | None = None
    sale_ends_at: Instant | None = None
    #: Seconds a buyer has to pay; unset: the service's default.
    pay_within_seconds: PayWithin | None = None
    #: A queued sale (needs ``saleStartsAt``): orders need an admission from its queue.
    queued: bool = False
    #: When buyers may join the queue (unset: at once); not after ``saleStartsAt``.
    queue_opens_at: Instant | None = None
    #: Admissions a second; unset: as fast as admitted buyers order (a window of them).
    admission_per_second: PerSecond | None = None
    #: What delivering it costs at least: an order's ``deliveryFee`` is the highest of its
    #: products' fees and the shop's flat fee (which alone the free-delivery threshold waives).
    delivery_fee: Amount = 0


class ProductChangeIn(Wire):
    """Only the fields sent change; ``null`` clears a bound of the window or the payment
    deadline (back to the service's default). ``deliveryFee`` takes a number (0: nothing
    more than the shop's fee)."""

    sale_starts_at: Instant | None = None
    sale_ends_at: Instant | None = None
    pay_within_seconds: PayWithin | None = None
    queued: bool = False
    queue_opens_at: Instant | None = None
    admission_per_second: PerSecond | None = None
    delivery_fee: Amount = 0


class ProductOut(WireOut):
    product_id: str
    name: str
    price: int
    stock: int
    #: Units on the shelf: what can still be ordered.
    available: int
    #: Units of live orders, paid or held unpaid until their deadline: ``stock - available``.
    sold: int
    max_per_user: int | None
    sale_starts_at: datetime | None
    sale_ends_at: datetime | None
    pay_within_seconds: int
    #: A queued sale: join ``POST /api/v1/sales/{productId}/queue`` to be admitted.
    queued: bool
    queue_opens_at: datetime | None
    admission_per_second: float | None
    #: What delivering it costs at least (see ``deliveryFee`` of the product's creation).
    delivery_fee: int
    #: The server's clock when it answered, so that a client can count down to the start.
    server_time: datetime


class TicketStatusOut(StrEnum):
    """WAITING → ADMITTED → ORDERED | EXPIRED; WAITING | ADMITTED → LEFT. SOLD_OUT: waiting
    while no unit is available (back to WAITING if units come back)."""

    WAITING = "WAITING"
    ADMITTED = "ADMITTED"
    SOLD_OUT = "SOLD_OUT"
    LEFT = "LEFT"
    EXPIRED = "EXPIRED"
    ORDERED = "ORDERED"


class TicketOut(WireOut):
    """A buyer's place in a queued sale's line."""

    ticket_id: str
    product_id: str
    user_id: str
    status: TicketStatusOut
    #: 1-based place in the line; null before the draw at ``drawAt`` (the sale's start).
    position: int | None
    #: Tickets still to be admitted before this one (at most: some may have left).
    ahead: int | None
    #: From the measured admission rate; null when unknown (before the draw, sold out).
    estimated_wait_seconds: int | None
    draw_at: datetime
    #: Once ADMITTED: send it as the ``Admission-Token`` header of the order, before
    #: ``admittedUntil``.
    admission_token: str | None = None
    admitted_until: datetime | None = None


class QueueStatsOut(WireOut):
    """A queued sale's line in figures (admin): the draw's seed re-derives its order."""

    product_id: str
    opens_at: datetime | None
    draw_at: datetime
    drawn: bool
    #: The draw: an early ticket's place is the first 13 hex digits of
    #: SHA-1(seed ":" userId), smallest first.
    seed: str
    joined: int
    waiting: int
    admitted: int
    #: Admitted buyers whose turn is on (no order yet, token alive).
    live: int
    ordered: int
    expired: int
    left: int
    sold_out: bool
    admission_per_second: float | None
    #: Measured over the last 10 s, by the process that answers.
    admitted_per_second: float | None
    #: At most this many turns at once (when no admissionPerSecond is set).
    window: int | None


class StockChangeIn(Wire):
    """Exactly one of ``add`` (may be negative) and ``set``."""

    add: Annotated[int, Field(ge=-(10**9), le=10**9)] | None = None
    set: Count | None = None


class DiscountPolicyIn(Wire):
    policy_id: Ident
    kind: Kind
    #: An amount for FIXED, a whole percentage 1..100 for PERCENT.
    value: Annotated[int, Field(ge=1, le=10**12)]
    min_order_amount: Amount = 0
    max_discount: Amount | None = None
    #: With a time zone (``2026-11-25T09:00:00+09:00``): a sale starts at one instant.
    valid_from: Instant | None = None
    valid_until: Instant | None = None


class DiscountPolicyOut(WireOut):
    """Every member is always present; the optional ones of the request are null here."""

    policy_id: str
    kind: DiscountKind
    value: int
    min_order_amount: int
    max_discount: int | None
    valid_from: datetime | None
    valid_until: datetime | None


class PaymentEventIn(Wire):
    """The payment provider's event, as its signed webhook carries it."""

    #: The provider's id of this event: a delivery of the same id counts once.
    event_id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
    order_id: Ident
    amount: Amount
    status: PayStatus


class PaymentEventOut(WireOut):
    payment_ref: str
    order_id: str
    status: PaymentStatus
    amount: int
    #: ``paid``, ``extended`` (the deadline moved, once), ``unchanged``, or ``refund-due``
    #: (money for an order that no longer waits for it: it is announced for a refund).
    outcome: PaymentOutcome
    order_status: OrderStatus
    #: True when this event had been processed before: this delivery changed nothing.
    replayed: bool


class Health(WireOut):
    status: Literal["ok"]


class ReadModelLag(WireOut):
    """How far the read model trails the write model; -1 where a dependency is down."""

    events: int = Field(description="Events not yet applied: outbox backlog + broker lag")
    seconds: float = Field(description="Age of the oldest event not yet applied")
    outbox: int = Field(description="Outbox rows not yet published")
    projectors: int = Field(description="Projectors that reported lately (0 when embedded)")


class Readiness(WireOut):
    status: Literal["ready", "not ready"]
    checks: dict[str, str] = Field(
        description="Each dependency's state: `ok`, or what is wrong (`down: …`, `stopped`)"
    )
    lag: ReadModelLag
