"""Domain errors. Each carries the data a caller needs to explain it.

FlashOrderError
 ├── NotFound
 │    ├── ProductNotFound
 │    ├── OrderNotFound
 │    └── DiscountPolicyNotFound
 ├── Conflict                      the request is valid but the state says no
 │    ├── SoldOut
 │    ├── LimitReached
 │    ├── DuplicateInFlight
 │    ├── AlreadyExists
 │    ├── StockBelowCommitted
 │    ├── SaleNotStarted            carries when it starts (a Retry-After)
 │    ├── SaleEnded
 │    ├── QueueNotOpen              a queued sale's waiting room before it opens (a Retry-After)
 │    └── OrderStateConflict        the order's state does not allow this step
 ├── Invalid                       the request contradicts the catalogue or itself
 │    ├── PriceMismatch
 │    ├── PaymentAmountMismatch
 │    ├── PaymentEventReused        a payment event id seen before with other content
 │    ├── DiscountNotApplicable
 │    ├── IdempotencyKeyReused
 │    ├── UnknownReference          the body names a product or policy that does not exist
 │    └── InvalidOrder
 ├── AdmissionRefused              an order of a queued product without a valid admission
 │    ├── AdmissionRequired         no admission token: join the queue
 │    ├── AdmissionTokenInvalid     forged, or another user's or another product's
 │    └── AdmissionTokenExpired     the admitted turn passed without an order
 └── Unavailable                   a dependency failed; nothing was half-written
"""

from __future__ import annotations

from datetime import datetime


class FlashOrderError(Exception):
    """Base of every error the service raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(FlashOrderError):
    pass


class ProductNotFound(NotFound):
    def __init__(self, product_id: str) -> None:
        super().__init__(f"product {product_id!r} does not exist")
        self.product_id = product_id


class OrderNotFound(NotFound):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id!r} does not exist")
        self.order_id = order_id


class DiscountPolicyNotFound(NotFound):
    def __init__(self, policy_id: str) -> None:
        super().__init__(f"discount policy {policy_id!r} does not exist")
        self.policy_id = policy_id


class NoQueue(NotFound):
    def __init__(self, product_id: str) -> None:
        super().__init__(f"product {product_id!r} is not sold through a queue")
        self.product_id = product_id


class TicketNotFound(NotFound):
    def __init__(self, product_id: str, ticket_id: str) -> None:
        super().__init__(f"the queue of {product_id!r} has no ticket {ticket_id!r} of yours")
        self.product_id = product_id
        self.ticket_id = ticket_id


class Conflict(FlashOrderError):
    pass


class SoldOut(Conflict):
    def __init__(self, product_id: str) -> None:
        super().__init__(f"product {product_id!r} is sold out")
        self.product_id = product_id


class LimitReached(Conflict):
    def __init__(self, product_id: str, limit: int) -> None:
        super().__init__(f"at most {limit} of product {product_id!r} per user")
        self.product_id = product_id
        self.limit = limit


class DuplicateInFlight(Conflict):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is already being processed; retry later")


class AlreadyExists(Conflict):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} already exists")


class StockBelowCommitted(Conflict):
    def __init__(self, product_id: str, committed: int) -> None:
        super().__init__(
            f"stock of {product_id!r} cannot go below the {committed} units already ordered"
        )
        self.product_id = product_id
        self.committed = committed


class SaleNotStarted(Conflict):
    def __init__(self, product_id: str, starts_at: datetime, now: datetime) -> None:
        super().__init__(f"the sale of {product_id!r} starts at {starts_at.isoformat()}")
        self.product_id = product_id
        self.starts_at = starts_at
        #: Seconds until the start, from the clock that refused the order.
        self.seconds_left = max(0.0, (starts_at - now).total_seconds())


class SaleEnded(Conflict):
    def __init__(self, product_id: str, ended_at: datetime) -> None:
        super().__init__(f"the sale of {product_id!r} ended at {ended_at.isoformat()}")
        self.product_id = product_id
        self.ended_at = ended_at


class QueueNotOpen(Conflict):
    def __init__(self, product_id: str, opens_at: datetime, now: datetime) -> None:
        super().__init__(f"the queue of {product_id!r} opens at {opens_at.isoformat()}")
        self.product_id = product_id
        self.opens_at = opens_at
        self.seconds_left = max(0.0, (opens_at - now).total_seconds())


class OrderStateConflict(Conflict):
    def __init__(self, order_id: str, status: str, wanted: str) -> None:
        super().__init__(f"order {order_id!r} is {status}: it cannot be {wanted}")
        self.order_id = order_id
        self.status = status


class Invalid(FlashOrderError):
    pass


class PaymentAmountMismatch(Invalid):
    def __init__(self, order_id: str, expected: int, given: int) -> None:
        super().__init__(f"order {order_id!r} costs {expected}, the payment is of {given}")
        self.order_id = order_id
        self.expected = expected
        self.given = given


class PriceMismatch(Invalid):
    def __init__(self, field: str, expected: int, given: int) -> None:
        super().__init__(f"{field} is {given}, the server computes {expected}")
        self.field = field
        self.expected = expected
        self.given = given


class PaymentEventReused(Invalid):
    def __init__(self, payment_ref: str) -> None:
        super().__init__(f"payment event {payment_ref!r} was processed with other content")
        self.payment_ref = payment_ref


class DiscountNotApplicable(Invalid):
    pass


class IdempotencyKeyReused(Invalid):
    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was already used with a different request")


class InvalidOrder(Invalid):
    pass


class UnknownReference(Invalid):
    """A request body names something that does not exist (422, unlike a missing URL: 404)."""

    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"{what} {ident!r} does not exist")
        self.what = what
        self.ident = ident


class AdmissionRefused(FlashOrderError):
    """An order of a queued product that does not carry a valid admission; the detail says
    how to get one."""

    def __init__(self, product_id: str, reason: str) -> None:
        super().__init__(
            f"{reason}; product {product_id!r} is sold through a queue: join it with "
            f"POST /api/v1/sales/{product_id}/queue and, once admitted, send its "
            "admissionToken as the Admission-Token header"
        )
        self.product_id = product_id


class AdmissionRequired(AdmissionRefused):
    def __init__(self, product_id: str) -> None:
        super().__init__(product_id, "no Admission-Token header")


class AdmissionTokenInvalid(AdmissionRefused):
    pass


class AdmissionTokenExpired(AdmissionRefused):
    def __init__(self, product_id: str) -> None:
        super().__init__(product_id, "the admission token has expired: the turn has passed")


class Unavailable(FlashOrderError):
    """A dependency is down or slow. ``detail`` may hold what a driver said (hosts, ports,
    users): it is for the logs, and reaches a client only when ``public`` says it was written
    for one."""

    def __init__(self, dependency: str, detail: str = "", *, public: bool = False) -> None:
        super().__init__(f"{dependency} is unavailable{': ' + detail if detail else ''}")
        self.dependency = dependency
        self.reason = detail
        self.public = public
