"""What the checks read of a stack's stores, and nothing else: plain read-only queries of the
tables and Redis keys listed in docs/benchmarks.md ("What the checks read").

The one place that knows the stores' layout outside the service: the bench's checks and the
tests' invariants both read through it. It writes nothing (the harness in ``stack`` creates
and drops databases; the service's own ``flashorder migrate`` makes the schema).

Every query can be limited to a prefix of product ids (``product_prefix``), so that checks
hold on a shared database: the bench's runs tag every product id they create.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

#: The statuses of an order that holds its stock (``orders.status``): unpaid within its
#: deadline, or paid. EXPIRED and CANCELLED orders gave theirs back.
LIVE = frozenset({"CREATED", "PAID"})
CANCELLED = "CANCELLED"

#: The stock gate's count of a product in Redis: ``<prefix>:{stock}:avail:<productId>``.
GATE_KEY_PREFIX = "fo"


class ProductRow(NamedTuple):
    stock: int
    available: int
    max_per_user: int | None


class OrderRow(NamedTuple):
    user_id: str
    status: str
    version: int


@dataclass(frozen=True)
class WriteModel:
    """The write side's slice: products, orders, their lines in order, and (when read) the
    outbox's events (event id → type, aggregate id)."""

    products: dict[str, ProductRow]
    orders: dict[str, OrderRow]
    items: dict[str, list[tuple[str, int]]]
    outbox: dict[str, tuple[str, str]] = field(default_factory=dict)

    def only(self, product_ids: Iterable[str]) -> WriteModel:
        """The slice of ``product_ids``: those products, and the orders with a line of one."""
        wanted = set(product_ids)
        items = {o: lines for o, lines in self.items.items() if any(p in wanted for p, _ in lines)}
        return WriteModel(
            {p: row for p, row in self.products.items() if p in wanted},
            {o: row for o, row in self.orders.items() if o in items},
            items,
            self.outbox,
        )

    @property
    def cancelled(self) -> set[str]:
        return {oid for oid, o in self.orders.items() if o.status == CANCELLED}

    def sales(self) -> dict[str, tuple[int, int]]:
        """Product → units and lines of live orders (what ``product_sales`` counts)."""
        sold: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
        for order_id, lines in self.items.items():
            if self.orders[order_id].status not in LIVE:
                continue
            for product_id, quantity in lines:
                units, count = sold[product_id]
                sold[product_id] = (units + quantity, count + 1)
        return dict(sold)

    def held(self) -> Counter[tuple[str, str]]:
        """(user, product) → units in the user's live orders."""
        found: Counter[tuple[str, str]] = Counter()
        for order_id, lines in self.items.items():
            order = self.orders[order_id]
            if order.status in LIVE:
                for product_id, quantity in lines:
                    found[(order.user_id, product_id)] += quantity
        return found


def _like(prefix: str) -> str:
    """A LIKE pattern matching ids that start with ``prefix`` (its wildcards escaped)."""
    # '!' escapes: a backslash would need doubling in MariaDB and not in SQLite.
    escaped = prefix.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return escaped + "%"


async def load_write_model(
    engine: AsyncEngine, product_prefix: str = "", *, with_outbox: bool = False
) -> WriteModel:
    """Products whose id starts with ``product_prefix``, the orders with a line of one of
    them (every line of those orders), and the whole outbox if asked."""
    like = {"p": _like(product_prefix)}
    ours = (
        "SELECT order_id FROM order_items WHERE product_id LIKE :p ESCAPE '!'"
        if product_prefix
        else "SELECT order_id FROM order_items"
    )
    async with engine.connect() as conn:
        products = {
            r.product_id: ProductRow(int(r.stock), int(r.available), r.max_per_user)
            for r in await conn.execute(
                text(
                    "SELECT product_id, stock, available, max_per_user FROM products "
                    "WHERE product_id LIKE :p ESCAPE '!'"
                ),
                like,
            )
        }
        orders = {
            r.order_id: OrderRow(r.user_id, r.status, int(r.version))
            for r in await conn.execute(
                text(
                    "SELECT order_id, user_id, status, version FROM orders "
                    f"WHERE order_id IN ({ours})"
                ),
                like,
            )
        }
        items: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for r in await conn.execute(
            text(
                "SELECT order_id, product_id, quantity FROM order_items "
                f"WHERE order_id IN ({ours}) ORDER BY order_id, line_no"
            ),
            like,
        ):
            items[r.order_id].append((r.product_id, int(r.quantity)))
        outbox: dict[str, tuple[str, str]] = {}
        if with_outbox:
            outbox = {
                r.event_id: (r.type, r.aggregate_id)
                for r in await conn.execute(text("SELECT event_id, type, aggregate_id FROM outbox"))
            }
    return WriteModel(products, orders, dict(items), outbox)


@dataclass(frozen=True)
class ReadModel:
    """The projector's tables: order views (user, status, version) and product sales (units,
    orders)."""

    views: dict[str, OrderRow]
    sales: dict[str, tuple[int, int]]


async def load_read_model(engine: AsyncEngine, product_prefix: str = "") -> ReadModel:
    """The views of orders with a line of the prefix's products (all views without a prefix),
    and the sales of those products."""
    like = {"p": _like(product_prefix)}
    where = (
        "WHERE order_id IN (SELECT order_id FROM order_items WHERE product_id LIKE :p ESCAPE '!')"
        if product_prefix
        else ""
    )
    async with engine.connect() as conn:
        views = {
            r.order_id: OrderRow(r.user_id, r.status, int(r.version))
            for r in await conn.execute(
                text(f"SELECT order_id, user_id, status, version FROM order_views {where}"), like
            )
        }
        sales = {
            r.product_id: (int(r.sold), int(r.orders))
            for r in await conn.execute(
                text(
                    "SELECT product_id, sold, orders FROM product_sales "
                    "WHERE product_id LIKE :p ESCAPE '!'"
                ),
                like,
            )
        }
    return ReadModel(views, sales)


async def idempotency_orders(engine: AsyncEngine, user_prefix: str) -> Counter[str]:
    """Order id → how many idempotency records of the prefix's users answer with it."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT body FROM idempotency_records WHERE user_id LIKE :u ESCAPE '!'"),
                {"u": _like(user_prefix)},
            )
        ).all()
    return Counter(str(orjson.loads(r.body).get("orderId")) for r in rows)


async def gate_counts(
    redis_url: str, product_ids: Iterable[str], *, key_prefix: str = GATE_KEY_PREFIX
) -> dict[str, int | None]:
    """The stock gate's count of each product (None: the gate holds none)."""
    ids = list(product_ids)
    if not ids:
        return {}
    client = Redis.from_url(redis_url)
    try:
        values = await client.mget([f"{key_prefix}:{{stock}}:avail:{p}" for p in ids])
    finally:
        await client.aclose()
    return {p: None if v is None else int(v) for p, v in zip(ids, values, strict=True)}
