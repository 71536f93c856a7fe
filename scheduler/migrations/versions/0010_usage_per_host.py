"""usage_records: one per attempt and host, so a gang's ranks each count on their provider

A gang's attempt was one record on rank 0's provider with every rank's GPUs: the other
ranks' providers saw nothing of it in their usage. Now each rank's host has its own record
(its GPUs, its price); the ranks are on distinct hosts by construction.

Revision ID: 0010d1e2f3a4
Revises: 0009c4d5e6f7
Create Date: 2026-11-30 14:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010d1e2f3a4"
down_revision: str | None = "0009c4d5e6f7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:  # SQLite: the table is rebuilt
        batch.drop_constraint("uq_usage_job_attempt", type_="unique")
        batch.create_unique_constraint(
            "uq_usage_job_attempt_provider", ["job_id", "attempt", "provider_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_constraint("uq_usage_job_attempt_provider", type_="unique")
        batch.create_unique_constraint("uq_usage_job_attempt", ["job_id", "attempt"])
