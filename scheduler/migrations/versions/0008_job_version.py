"""job version column for optimistic concurrency (compare-and-set on job state)

Revision ID: 0008b7e1c2d3
Revises: 7b111e007b0x
Create Date: 2026-11-30 00:55:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008b7e1c2d3"
down_revision: str | None = "0007a17sched"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("version")
