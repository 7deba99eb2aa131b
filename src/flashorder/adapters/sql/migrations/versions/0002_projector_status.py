"""The projectors' progress and lag, read by the API processes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-10
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MARIADB = ("mysql", "mariadb")
OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def upgrade() -> None:
    time = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), *MARIADB)
    op.create_table(
        "projector_status",
        sa.Column("consumer", sa.String(64), nullable=False),
        sa.Column("lag_events", sa.BigInteger(), nullable=False),
        sa.Column("lag_seconds", sa.Double(), nullable=False),
        sa.Column("applied_total", sa.BigInteger(), nullable=False),
        sa.Column("last_batch_at", time, nullable=True),
        sa.Column("updated_at", time, nullable=False),
        sa.PrimaryKeyConstraint("consumer", name=op.f("pk_projector_status")),
        **OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("projector_status")
