"""usage records, job tags, dispatch deadline, placement price, artifacts

Revision ID: 5c1d2e7f9a10
Revises: 27a9e90396bf
Create Date: 2026-11-23 15:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c1d2e7f9a10"
down_revision: str | None = "27a9e90396bf"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("min_compute_capability", sa.String(8), nullable=True))
        batch_op.add_column(sa.Column("start_deadline", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("price_per_hour", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("gpu_name", sa.String(128), nullable=True))
        batch_op.add_column(sa.Column("wait_reason", sa.String(255), nullable=True))
        batch_op.add_column(
            sa.Column("artifacts", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch_op.create_index("ix_jobs_owner_created", ["owner_id", "created_at"], unique=False)
    with op.batch_alter_table("provider_views", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_id", sa.String(36), nullable=True))
        batch_op.create_index(batch_op.f("ix_provider_views_owner_id"), ["owner_id"])
    op.create_table(
        "job_tags",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "tag"),
    )
    with op.batch_alter_table("job_tags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_tags_tag"), ["tag"], unique=False)
    op.create_table(
        "usage_records",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("provider_id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("gpu_model", sa.String(length=128), nullable=True),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.Column("price_per_hour", sa.Float(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "attempt", name="uq_usage_job_attempt"),
    )
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_usage_records_job_id"), ["job_id"])
        batch_op.create_index(batch_op.f("ix_usage_records_owner_id"), ["owner_id"])
        batch_op.create_index(batch_op.f("ix_usage_records_provider_id"), ["provider_id"])
        batch_op.create_index(batch_op.f("ix_usage_records_ended_at"), ["ended_at"])


def downgrade() -> None:
    op.drop_table("usage_records")
    op.drop_table("job_tags")
    with op.batch_alter_table("provider_views", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_provider_views_owner_id"))
        batch_op.drop_column("owner_id")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_owner_created")
        for col in (
            "artifacts",
            "wait_reason",
            "gpu_name",
            "price_per_hour",
            "start_deadline",
            "min_compute_capability",
        ):
            batch_op.drop_column(col)
