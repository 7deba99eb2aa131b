"""A product's waiting room: whether its sale is queued, when the queue opens, the rate.

Columns added at the end, each with a default or nullable: instant on MariaDB (no table
copy), and every product that exists stays an unqueued sale.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time() -> sa.types.TypeEngine[datetime]:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("products") as products:
        products.add_column(sa.Column("queued", sa.Boolean(), nullable=False, server_default="0"))
        products.add_column(sa.Column("queue_opens_at", _time(), nullable=True))
        products.add_column(sa.Column("admission_per_second", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("products") as products:
        for column in ("admission_per_second", "queue_opens_at", "queued"):
            products.drop_column(column)
