"""fair share, quotas, preemption, cordon (issue 17)

Revision ID: 0007a17sched
Revises: 0005_job_leases
Create Date: 2026-11-30 00:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007a17sched"
down_revision: str | None = "0006a1b2c3d4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "owner_policies",
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("max_gpus", sa.Integer(), nullable=True),
        sa.Column("max_gpu_hours", sa.Float(), nullable=True),
        sa.Column("period_seconds", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner_id"),
    )
    op.create_table(
        "owner_usage",
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("decayed_gpu_seconds", sa.Float(), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner_id"),
    )
    op.create_table(
        "attempt_usage",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "attempt", name="uq_attempt_usage_attempt"),
    )
    with op.batch_alter_table("attempt_usage", schema=None) as batch_op:
        batch_op.create_index("ix_attempt_usage_owner_ended", ["owner_id", "ended_at"])
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("effective_priority", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("preemptions", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("gang", sa.JSON(), nullable=True))
    with op.batch_alter_table("provider_views", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cordoned", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("cordon_reason", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("provider_views", schema=None) as batch_op:
        batch_op.drop_column("cordon_reason")
        batch_op.drop_column("cordoned")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("gang")
        batch_op.drop_column("preemptions")
        batch_op.drop_column("effective_priority")
    with op.batch_alter_table("attempt_usage", schema=None) as batch_op:
        batch_op.drop_index("ix_attempt_usage_owner_ended")
    op.drop_table("attempt_usage")
    op.drop_table("owner_usage")
    op.drop_table("owner_policies")
