"""jobs: an index for the owner's list filtered by state; provider_views.version (issue 12)

Revision ID: 0006a1b2c3d4
Revises: 7b111e007b0x
Create Date: 2026-11-30 00:25:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006a1b2c3d4"
down_revision: str | None = "0005_job_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("provider_views") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), server_default="0", nullable=False))
    op.create_index(
        "ix_jobs_owner_state_created", "jobs", ["owner_id", "state", "created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_state_created", table_name="jobs")
    with op.batch_alter_table("provider_views") as batch:
        batch.drop_column("version")
