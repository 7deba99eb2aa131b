"""A product's own delivery fee: an order's fee is the highest of its products' and the
shop's flat fee (``pricing.DeliveryRule``).

A column with a constant default added at the end: instant on MariaDB (no table copy), and
every product that exists costs nothing more to deliver than before.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("products") as batch:
        batch.add_column(
            sa.Column("delivery_fee", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("products") as batch:
        batch.drop_column("delivery_fee")
