"""providers: an index in the search's page order (issue 12)

Revision ID: 0004b5c6d7e8
Revises: 0003
Create Date: 2026-11-30 00:35:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004b5c6d7e8"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_providers_registered", "providers", ["registered_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_providers_registered", table_name="providers")
