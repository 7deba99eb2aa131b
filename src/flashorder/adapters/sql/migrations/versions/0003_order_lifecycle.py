"""The life of a sale: sale windows, payment deadlines, processed payment events.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Orders placed before this step had no deadline. They get one a day after the migration runs,
so that an upgrade never expires a waiting buyer's order at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
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


def upgrade() -> None:
    with op.batch_alter_table("products") as products:
        products.add_column(sa.Column("sale_starts_at", _time(), nullable=True))
        products.add_column(sa.Column("sale_ends_at", _time(), nullable=True))
        products.add_column(sa.Column("pay_within_seconds", sa.Integer(), nullable=True))
    with op.batch_alter_table("orders") as orders:
        orders.add_column(sa.Column("pay_by", _time(), nullable=True))
        orders.add_column(sa.Column("paid_at", _time(), nullable=True))
        orders.add_column(sa.Column("payment_ref", sa.String(128), nullable=True))
        orders.add_column(
            sa.Column("deadline_extended", sa.Boolean(), nullable=False, server_default="0")
        )
    # Naive UTC, as every time column holds.
    deadline = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None)
    op.execute(
        sa.text("UPDATE orders SET pay_by = :deadline WHERE pay_by IS NULL").bindparams(
            deadline=deadline
        )
    )
    with op.batch_alter_table("orders") as orders:
        orders.alter_column("pay_by", existing_type=_time(), nullable=False)
        orders.create_index(op.f("ix_orders_status_pay_by"), ["status", "pay_by"])
    op.create_table(
        "payment_events",
        sa.Column("payment_ref", sa.String(128), nullable=False),
        sa.Column("order_id", sa.CHAR(36), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("order_status", sa.String(16), nullable=False),
        sa.Column("received_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("payment_ref", name=op.f("pk_payment_events")),
        **OPTIONS,
    )
    op.create_index(op.f("ix_payment_events_order_id"), "payment_events", ["order_id"])
    with op.batch_alter_table("product_sales") as sales:
        sales.add_column(sa.Column("paid", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("product_sales") as sales:
        sales.drop_column("paid")
    op.drop_table("payment_events")
    with op.batch_alter_table("orders") as orders:
        orders.drop_index(op.f("ix_orders_status_pay_by"))
        for column in ("deadline_extended", "payment_ref", "paid_at", "pay_by"):
            orders.drop_column(column)
    with op.batch_alter_table("products") as products:
        for column in ("pay_within_seconds", "sale_ends_at", "sale_starts_at"):
            products.drop_column(column)
