"""host resources: provider views carry CPUs, memory and Docker; jobs their CPU and memory

Revision ID: 0004_host_resources
Revises: 7b111e007b0x
Create Date: 2026-11-30 00:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_host_resources"
down_revision: str | None = "7b111e007b0x"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("provider_views", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cpu_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("memory_mb", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("docker", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cpu", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("memory_mb", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("memory_mb")
        batch_op.drop_column("cpu")
    with op.batch_alter_table("provider_views", schema=None) as batch_op:
        batch_op.drop_column("docker")
        batch_op.drop_column("memory_mb")
        batch_op.drop_column("cpu_count")
