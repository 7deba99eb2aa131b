"""The relational schema, as SQLAlchemy Core tables, portable between MariaDB 10.11 and SQLite.

The migrations (``adapters/sql/migrations``) create exactly these tables; a contract test compares
the two. Conventions that hold for every table:

- Times are ``DATETIME(6)`` holding naive UTC; ``UtcDateTime`` converts at the boundary, so
  Python only ever sees timezone-aware UTC datetimes.
- JSON is stored as text (``MEDIUMTEXT`` on MariaDB) and (de)serialised with orjson by the
  repositories: no dialect's JSON type, so both databases store the same bytes.
- On MariaDB every table is InnoDB, utf8mb4 with the binary collation: ids compare byte for
  byte (``"abc" != "ABC"``, as in SQLite), and order ids (UUIDv7 text) sort by time.
- Order items have no foreign key to products on purpose: a foreign key check takes a shared
  lock on the product row, and the same transaction's stock update then needs to upgrade it
  to exclusive, which deadlocks concurrent orders of a hot product.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    CHAR,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine

# Deterministic constraint names, so migrations can refer to them on every dialect.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

MARIADB_TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


class UtcDateTime(TypeDecorator[datetime]):
    """``DATETIME(6)`` holding naive UTC; aware UTC on the Python side.

    A naive datetime is refused: it would be stored as whatever local time it meant.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[datetime]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the database stores UTC, pass an aware time")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


#: JSON documents as text. TEXT is 64 KiB on MariaDB; an order of many lines can exceed it.
JsonText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

#: SQLite autoincrements only an ``INTEGER PRIMARY KEY`` (the rowid alias), never a BIGINT.
AutoId = BigInteger().with_variant(Integer(), "sqlite")

ID = 64  # product, user and policy ids
UUID_TEXT = 36  # order and event ids: canonical UUID text, made by the application


def _times() -> tuple[Column[datetime], Column[datetime]]:
    return (
        Column("created_at", UtcDateTime(), nullable=False),
        Column("updated_at", UtcDateTime(), nullable=False),
    )


products = Table(
    "products",
    metadata,
    Column("product_id", String(ID), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("stock", BigInteger, nullable=False),
    Column("available", BigInteger, nullable=False),
    Column("max_per_user", Integer, nullable=True),
    Column("version", Integer, nullable=False),
    *_times(),
    # The sale window (None: open on that side) and the product's own payment deadline.
    Column("sale_starts_at", UtcDateTime(), nullable=True),
    Column("sale_ends_at", UtcDateTime(), nullable=True),
    Column("pay_within_seconds", Integer, nullable=True),
    # The waiting room of a queued sale (``domain/queue.py``).
    Column("queued", Boolean, nullable=False, server_default="0"),
    Column("queue_opens_at", UtcDateTime(), nullable=True),
    Column("admission_per_second", Double, nullable=True),
    # What delivering it costs at least (pricing.DeliveryRule).
    Column("delivery_fee", BigInteger, nullable=False, server_default="0"),
    # The no-oversell promise, enforced by the database itself as the last line of defence.
    CheckConstraint("available >= 0 AND available <= stock", name="available_within_stock"),
    **MARIADB_TABLE_OPTIONS,
)

discount_policies = Table(
    "discount_policies",
    metadata,
    Column("policy_id", String(ID), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("value", BigInteger, nullable=False),
    Column("min_order_amount", BigInteger, nullable=False),
    Column("max_discount", BigInteger, nullable=True),
    Column("valid_from", UtcDateTime(), nullable=True),
    Column("valid_until", UtcDateTime(), nullable=True),
    **MARIADB_TABLE_OPTIONS,
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", CHAR(UUID_TEXT), primary_key=True),
    Column("user_id", String(ID), nullable=False),
    Column("status", String(16), nullable=False),
    Column("discount_policy_id", String(ID), nullable=True),
    Column("discount_amount", BigInteger, nullable=False),
    Column("delivery_fee", BigInteger, nullable=False),
    Column("payment_amount", BigInteger, nullable=False),
    Column("payment_type", String(32), nullable=False),
    Column("version", Integer, nullable=False),
    *_times(),
    Column("pay_by", UtcDateTime(), nullable=False),
    Column("paid_at", UtcDateTime(), nullable=True),
    Column("payment_ref", String(128), nullable=True),
    Column("deadline_extended", Boolean, nullable=False, server_default="0"),
    Index(None, "user_id", "order_id"),
    # The expirers' scan: ``status = 'CREATED' AND pay_by <= now ORDER BY pay_by``.
    Index(None, "status", "pay_by"),
    **MARIADB_TABLE_OPTIONS,
)

order_items = Table(
    "order_items",
    metadata,
    Column("order_id", CHAR(UUID_TEXT), ForeignKey("orders.order_id"), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("product_id", String(ID), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("unit_price", BigInteger, nullable=False),
    PrimaryKeyConstraint("order_id", "line_no"),
    Index(None, "product_id"),
    **MARIADB_TABLE_OPTIONS,
)

user_purchases = Table(
    "user_purchases",
    metadata,
    Column("user_id", String(ID), nullable=False),
    Column("product_id", String(ID), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "product_id"),
    # Reconciliation reads every user's count of one product.
    Index(None, "product_id"),
    **MARIADB_TABLE_OPTIONS,
)

idempotency_records = Table(
    "idempotency_records",
    metadata,
    Column("user_id", String(ID), nullable=False),
    Column("idem_key", String(255), nullable=False),
    Column("fingerprint", String(128), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("body", JsonText, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("user_id", "idem_key"),
    # Retention deletes by age.
    Index(None, "created_at"),
    **MARIADB_TABLE_OPTIONS,
)

# The payment provider's events that were processed: the primary key is what makes a
# redelivered event count once (inserted in the transaction that applies it).
payment_events = Table(
    "payment_events",
    metadata,
    Column("payment_ref", String(128), primary_key=True),
    Column("order_id", CHAR(UUID_TEXT), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("order_status", String(16), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Index(None, "order_id"),
    **MARIADB_TABLE_OPTIONS,
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("event_id", CHAR(UUID_TEXT), nullable=False, unique=True),
    Column("type", String(64), nullable=False),
    Column("aggregate_id", String(ID), nullable=False),
    Column("aggregate_version", Integer, nullable=False),
    Column("occurred_at", UtcDateTime(), nullable=False),
    Column("payload", JsonText, nullable=False),
    Column("published_at", UtcDateTime(), nullable=True),
    # The W3C trace context of the write that made the event, when tracing is on (55 chars
    # for version 00; room for a later version's longer form).
    Column("traceparent", String(128), nullable=True),
    # The relay's scan (``published_at IS NULL ORDER BY id``) and the purge both use it.
    Index(None, "published_at", "id"),
    # Without it SQLite may hand out an id again once the newest rows are purged.
    sqlite_autoincrement=True,
    **MARIADB_TABLE_OPTIONS,
)

# --- the read model: written only by the projector ---------------------------------------------

order_views = Table(
    "order_views",
    metadata,
    Column("order_id", CHAR(UUID_TEXT), primary_key=True),
    Column("user_id", String(ID), nullable=False),
    Column("status", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("body", JsonText, nullable=False),
    *_times(),
    Index(None, "user_id", "order_id"),
    **MARIADB_TABLE_OPTIONS,
)

product_sales = Table(
    "product_sales",
    metadata,
    Column("product_id", String(ID), primary_key=True),
    # Units of live orders (paid and unpaid holds), and of paid ones alone.
    Column("sold", BigInteger, nullable=False),
    Column("orders", BigInteger, nullable=False),
    Column("paid", BigInteger, nullable=False, server_default="0"),
    **MARIADB_TABLE_OPTIONS,
)

processed_events = Table(
    "processed_events",
    metadata,
    Column("event_id", CHAR(UUID_TEXT), primary_key=True),
    Column("processed_at", UtcDateTime(), nullable=False),
    **MARIADB_TABLE_OPTIONS,
)
