"""jobs: the owner's list indexes hold the whole order (created_at, id) (issue 12)

A page of ``GET /api/v1/jobs`` (newest first, ties by id) is then read along the index and
stops at its limit, with no sort of every match: PostgreSQL scans it backward, SQLite no
longer sorts the right part of the order.

Revision ID: 0009c4d5e6f7
Revises: 0008b7e1c2d3
Create Date: 2026-11-30 01:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009c4d5e6f7"
down_revision: str | None = "0008b7e1c2d3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_owner_created_id", "jobs", ["owner_id", "created_at", "id"])
    op.create_index(
        "ix_jobs_owner_state_created_id", "jobs", ["owner_id", "state", "created_at", "id"]
    )
    op.drop_index("ix_jobs_owner_created", table_name="jobs")
    op.drop_index("ix_jobs_owner_state_created", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_owner_state_created", "jobs", ["owner_id", "state", "created_at"])
    op.create_index("ix_jobs_owner_created", "jobs", ["owner_id", "created_at"])
    op.drop_index("ix_jobs_owner_state_created_id", table_name="jobs")
    op.drop_index("ix_jobs_owner_created_id", table_name="jobs")
