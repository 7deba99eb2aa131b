"""The scenarios: which products a run seeds and which calls it makes, from a seed.

Everything is derived from a ``ScenarioSpec`` deterministically, so the parent process and
each generator process build the same calls without shipping them across, and both
strategies of one run meet exactly the same requests.

- ``hot``: one product, little stock, many buyers (1 or 2 units each, a per-user limit).
- ``many``: orders spread over many products with ample stock: placement without contention.
- ``retry``: the hot sale with every order sent twice under one Idempotency-Key, the second
  either at once (a race with the first) or after the first answer (a client's retry).
- ``mixed``: 20% orders, 80% reads (a product, or an order placed before the phase).
- ``noshow``: the hot sale with a short payment deadline, in which a share of the winners
  never pay (``noshow.py`` drives it: buyers keep coming until expired units sold again).
- ``queue``: one crowd, two drops of the same stock: one bought head-on at the start, one
  through the waiting room (``drop.py`` drives it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import orjson

from flashorder_bench.samples import ECHO, GET_ORDER, GET_PRODUCT, ORDER

ScenarioName = Literal["hot", "many", "retry", "mixed", "noshow", "queue"]
SCENARIOS: tuple[ScenarioName, ...] = ("hot", "many", "retry", "mixed", "noshow", "queue")
#: The scenarios of one hot product that sells out.
HOT = ("hot", "retry", "noshow")

ORDERS_PATH = "/api/v1/orders"
ECHO_PATH = "/api/v1/bench/echo-order"


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """``tag`` prefixes every product and user id of the phase, so that phases and runs never
    share data and the checks find a phase's products by prefix."""

    name: ScenarioName
    tag: str
    requests: int
    stock: int
    users: int
    max_per_user: int | None
    products: int
    seed: int
    price: int = 10050
    #: ``mixed``: orders that exist, to read, with their buyers (only they may read them).
    orders: tuple[tuple[str, str], ...] = ()
    #: Send the order calls to the echo route instead (the ceiling of the HTTP stack).
    echo: bool = False
    #: The product's ``payWithinSeconds`` (None: the service's default).
    pay_within: int | None = None


@dataclass(frozen=True, slots=True)
class ProductSeed:
    product_id: str
    stock: int
    price: int
    max_per_user: int | None
    pay_within: int | None = None
    #: A queued drop (``queue``): the sale's start, when its pre-queue opens (None: at
    #: once) and its admission rate (None: as fast as the service sustains).
    sale_starts_at: datetime | None = None
    queued: bool = False
    queue_opens_at: datetime | None = None
    admission_per_second: float | None = None


@dataclass(frozen=True, slots=True)
class Call:
    kind: int
    method: str
    path: str
    body: bytes | None = None
    user_id: str = ""
    idempotency_key: str | None = None
    product_id: str = ""
    quantity: int = 0


@dataclass(frozen=True, slots=True)
class Job:
    """What one virtual user does in one go: usually one call; a retry pair is two, sent
    together (``concurrent``) or one after the other's answer."""

    calls: tuple[Call, ...]
    concurrent: bool = False


def product_count(spec: ScenarioSpec) -> int:
    if spec.name in HOT:
        return 1
    return max(1, spec.products)


def products(spec: ScenarioSpec) -> list[ProductSeed]:
    count = product_count(spec)
    if spec.name in HOT:
        stock, limit = spec.stock, spec.max_per_user
    else:
        # Ample: even if every order of the phase (at most 2 units) chose the same product.
        stock, limit = 2 * spec.requests + 10, None
    return [
        ProductSeed(product_id(spec, i), stock, spec.price, limit, spec.pay_within)
        for i in range(count)
    ]


def product_id(spec: ScenarioSpec, index: int) -> str:
    return f"P{spec.tag}_{index:04d}"


def user_id(spec: ScenarioSpec, index: int) -> str:
    return f"u{spec.tag}_{index}"


def jobs(spec: ScenarioSpec) -> list[Job]:
    """The phase's jobs, in the order they are due."""
    rng = random.Random(f"{spec.seed}:{spec.name}:{spec.tag}")
    count = product_count(spec)
    made: list[Job] = []
    for i in range(spec.requests):
        user = user_id(spec, rng.randrange(max(1, spec.users)))
        pid = product_id(spec, rng.randrange(count))
        quantity = rng.choice((1, 2))
        if spec.name == "mixed":
            made.append(_mixed(spec, rng, i, user, pid, quantity))
        elif spec.name == "retry":
            call = _order(spec, user, pid, quantity, key=f"k{spec.tag}_{i}")
            made.append(Job((call, call), concurrent=i % 2 == 0))
        else:
            made.append(Job((_order(spec, user, pid, quantity),)))
    return made


def _mixed(
    spec: ScenarioSpec, rng: random.Random, i: int, user: str, pid: str, quantity: int
) -> Job:
    roll = rng.random()
    if roll < 0.2:
        return Job((_order(spec, user, pid, quantity),))
    if roll < 0.6 or not spec.orders:
        return Job((Call(GET_PRODUCT, "GET", f"/api/v1/products/{pid}", user_id=user),))
    order_id, buyer = spec.orders[rng.randrange(len(spec.orders))]
    return Job((Call(GET_ORDER, "GET", f"{ORDERS_PATH}/{order_id}", user_id=buyer),))


def order_body(user: str, product: str, quantity: int, price: int) -> bytes:
    """The original's order request (docs/design.md), priced as the server prices it."""
    return orjson.dumps(
        {
            "userId": user,
            "items": [{"productId": product, "quantity": quantity, "productPrice": price}],
            "discountPolicyId": None,
            "discountAmount": None,
            "deliveryFee": 0,
            "paymentAmount": quantity * price,
            "paymentType": "CREDIT",
        }
    )


def _order(
    spec: ScenarioSpec, user: str, product: str, quantity: int, *, key: str | None = None
) -> Call:
    return Call(
        kind=ECHO if spec.echo else ORDER,
        method="POST",
        path=ECHO_PATH if spec.echo else ORDERS_PATH,
        body=order_body(user, product, quantity, spec.price),
        user_id=user,
        idempotency_key=key,
        product_id=product,
        quantity=quantity,
    )
