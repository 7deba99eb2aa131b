"""Databases and test data for the SQL contract suites (unit of work, outbox, read model).

Each test module gets one migrated database per backend: a SQLite file in a temporary
folder, or a fresh MariaDB database with a random name that is dropped afterwards. Engines
are built per test, inside the test's loop, and disposed after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uuid_utils

from flashorder.adapters.sql.migrate import (
    create_database_if_missing,
    database_url,
    drop_database,
    migrate,
)
from flashorder.domain.model import (
    Order,
    OrderId,
    OrderLine,
    PaymentType,
    Product,
    ProductId,
    UserId,
)

#: The backends every SQL contract test runs against. MariaDB must be up: a test that needs
#: it fails when it is down, it is never skipped.
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.services),
]


@contextmanager
def migrated_database(backend: str, *, folder: Path, mariadb_url: str) -> Iterator[str]:
    """The URL of a new database at the newest schema; removed on the way out."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{folder / 'contract.db'}"
        migrate(url)
        yield url
        return
    name = f"flashorder_contract_{uuid.uuid4().hex[:12]}"
    create_database_if_missing(mariadb_url, name)
    try:
        url = database_url(mariadb_url, name)
        migrate(url)
        yield url
    finally:
        drop_database(mariadb_url, name)


def now() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def new_order_id() -> OrderId:
    """Time-ordered, as the application makes them."""
    return OrderId(str(uuid_utils.uuid7()))


def new_product(*, stock: int = 10, price: int = 1000, max_per_user: int | None = None) -> Product:
    return Product(
        product_id=ProductId(new_id("prd")),
        name="Flash sale item",
        price=price,
        stock=stock,
        available=stock,
        max_per_user=max_per_user,
    )


def new_order(
    user_id: UserId,
    lines: list[tuple[ProductId, int]],
    *,
    order_id: OrderId | None = None,
    price: int = 1000,
) -> Order:
    order_lines = tuple(OrderLine(product_id, quantity, price) for product_id, quantity in lines)
    total = sum(line.amount for line in order_lines)
    return Order.place(
        order_id=order_id or new_order_id(),
        user_id=user_id,
        lines=order_lines,
        discount_policy_id=None,
        discount_amount=0,
        delivery_fee=0,
        payment_amount=total,
        payment_type=PaymentType.CREDIT,
        at=now(),
    )
