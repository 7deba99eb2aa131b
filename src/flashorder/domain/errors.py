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
 │    └── StockBelowCommitted
 ├── Invalid                       the request contradicts the catalogue or itself
 │    ├── PriceMismatch
 │    ├── DiscountNotApplicable
 │    ├── IdempotencyKeyReused
 │    ├── UnknownReference          the body names a product or policy that does not exist
 │    └── InvalidOrder
 └── Unavailable                   a dependency failed; nothing was half-written
"""

from __future__ import annotations


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


class Invalid(FlashOrderError):
    pass


class PriceMismatch(Invalid):
    def __init__(self, field: str, expected: int, given: int) -> None:
        super().__init__(f"{field} is {given}, the server computes {expected}")
        self.field = field
        self.expected = expected
        self.given = given


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


class Unavailable(FlashOrderError):
    """A dependency is down or slow. ``detail`` may hold what a driver said (hosts, ports,
    users): it is for the logs, and reaches a client only when ``public`` says it was written
    for one."""

    def __init__(self, dependency: str, detail: str = "", *, public: bool = False) -> None:
        super().__init__(f"{dependency} is unavailable{': ' + detail if detail else ''}")
        self.dependency = dependency
        self.reason = detail
        self.public = public
