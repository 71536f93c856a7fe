"""running jobs: the provider's lease and the scheduler's own timeout deadline; when a
provider last listed the attempts it holds

Revision ID: 0005_job_leases
Revises: 7b111e007b0x
Create Date: 2026-11-30 00:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_job_leases"
down_revision: str | None = "7b111e007b0x"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("run_deadline", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("provider_views", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("attempts_seen_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("provider_views", schema=None) as batch_op:
        batch_op.drop_column("attempts_seen_at")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("run_deadline")
        batch_op.drop_column("lease_expires_at")
