"""providers: an index for the search filtered by status, in its page order (issue 12)

Revision ID: 0005c7d8e9f0
Revises: 0004b5c6d7e8
Create Date: 2026-11-30 01:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005c7d8e9f0"
down_revision: str | None = "0004b5c6d7e8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_providers_status_registered",
        "providers",
        ["status", "registered_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_providers_status_registered", table_name="providers")
