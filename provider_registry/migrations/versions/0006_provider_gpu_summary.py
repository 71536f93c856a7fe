"""providers: the GPUs as the search filters them, on the provider's row (issue 12)

Revision ID: 0006d8e9f0a1
Revises: 0005c7d8e9f0
Create Date: 2026-11-30 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006d8e9f0a1"
down_revision: str | None = "0005c7d8e9f0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("providers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gpu_names", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(
            sa.Column("gpu_max_vram_mb", sa.Integer(), nullable=False, server_default="0")
        )
    # Existing providers: each distinct GPU name lower-cased, sorted, one per line framed by
    # newlines; the largest memory (as provider_registry.models.gpu_summary; a migration does
    # not import the app's code, which may change after it).
    conn = op.get_bind()
    found: dict[str, tuple[set[str], int]] = {}
    for provider_id, name, memory in conn.execute(
        sa.text("SELECT provider_id, name, memory_total_mb FROM gpus")
    ):
        names, most = found.get(provider_id, (set(), 0))
        names.add(name.lower())
        found[provider_id] = (names, max(most, memory or 0))
    rows = [
        {"p": pid, "n": "\n" + "\n".join(sorted(names)) + "\n", "m": most}
        for pid, (names, most) in found.items()
    ]
    if rows:
        conn.execute(
            sa.text("UPDATE providers SET gpu_names = :n, gpu_max_vram_mb = :m WHERE id = :p"),
            rows,
        )


def downgrade() -> None:
    with op.batch_alter_table("providers", schema=None) as batch_op:
        batch_op.drop_column("gpu_max_vram_mb")
        batch_op.drop_column("gpu_names")
