"""The initial schema: catalogue, orders, purchase counts, idempotency, outbox, read model.

Revision ID: 0001
Revises:
Create Date: 2026-05-10

Written out in full (not imported from ``sql.tables``): a migration is a fixed record of one
step, and must not change when the tables module moves on. Names are final (``op.f``), not
run through the tables' naming convention again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MARIADB = ("mysql", "mariadb")
OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def _time() -> sa.types.TypeEngine[datetime]:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), *MARIADB)


def _json() -> sa.types.TypeEngine[str]:
    return sa.Text().with_variant(mysql.MEDIUMTEXT(), *MARIADB)


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("stock", sa.BigInteger(), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("max_per_user", sa.Integer(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("product_id", name=op.f("pk_products")),
        sa.CheckConstraint(
            "available >= 0 AND available <= stock",
            name=op.f("ck_products_available_within_stock"),
        ),
        **OPTIONS,
    )
    op.create_table(
        "discount_policies",
        sa.Column("policy_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("min_order_amount", sa.BigInteger(), nullable=False),
        sa.Column("max_discount", sa.BigInteger(), nullable=True),
        sa.Column("valid_from", _time(), nullable=True),
        sa.Column("valid_until", _time(), nullable=True),
        sa.PrimaryKeyConstraint("policy_id", name=op.f("pk_discount_policies")),
        **OPTIONS,
    )
    op.create_table(
        "orders",
        sa.Column("order_id", sa.CHAR(36), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("discount_policy_id", sa.String(64), nullable=True),
        sa.Column("discount_amount", sa.BigInteger(), nullable=False),
        sa.Column("delivery_fee", sa.BigInteger(), nullable=False),
        sa.Column("payment_amount", sa.BigInteger(), nullable=False),
        sa.Column("payment_type", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_orders")),
        **OPTIONS,
    )
    op.create_index(op.f("ix_orders_user_id_order_id"), "orders", ["user_id", "order_id"])
    op.create_table(
        "order_items",
        sa.Column("order_id", sa.CHAR(36), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("unit_price", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", "line_no", name=op.f("pk_order_items")),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.order_id"], name=op.f("fk_order_items_order_id_orders")
        ),
        **OPTIONS,
    )
    op.create_index(op.f("ix_order_items_product_id"), "order_items", ["product_id"])
    op.create_table(
        "user_purchases",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "product_id", name=op.f("pk_user_purchases")),
        **OPTIONS,
    )
    op.create_index(op.f("ix_user_purchases_product_id"), "user_purchases", ["product_id"])
    op.create_table(
        "idempotency_records",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("idem_key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("body", _json(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "idem_key", name=op.f("pk_idempotency_records")),
        **OPTIONS,
    )
    op.create_index(
        op.f("ix_idempotency_records_created_at"), "idempotency_records", ["created_at"]
    )
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.CHAR(36), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("aggregate_id", sa.String(64), nullable=False),
        sa.Column("aggregate_version", sa.Integer(), nullable=False),
        sa.Column("occurred_at", _time(), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("published_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
        sqlite_autoincrement=True,
        **OPTIONS,
    )
    op.create_index(op.f("ix_outbox_published_at_id"), "outbox", ["published_at", "id"])
    op.create_table(
        "order_views",
        sa.Column("order_id", sa.CHAR(36), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", _json(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_order_views")),
        **OPTIONS,
    )
    op.create_index(op.f("ix_order_views_user_id_order_id"), "order_views", ["user_id", "order_id"])
    op.create_table(
        "product_sales",
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("sold", sa.BigInteger(), nullable=False),
        sa.Column("orders", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("product_id", name=op.f("pk_product_sales")),
        **OPTIONS,
    )
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.CHAR(36), nullable=False),
        sa.Column("processed_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_processed_events")),
        **OPTIONS,
    )


def downgrade() -> None:
    for table in (
        "processed_events",
        "product_sales",
        "order_views",
        "outbox",
        "idempotency_records",
        "user_purchases",
        "order_items",
        "orders",
        "discount_policies",
        "products",
    ):
        op.drop_table(table)
