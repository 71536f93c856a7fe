"""Autogenerate a migration for one service: ``python scripts/makemigration.py scheduler "msg"``.

It diffs the models against a scratch SQLite database brought to head first, so the new
revision holds only what changed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent


def main(service: str, message: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config()
        cfg.set_main_option("script_location", str(ROOT / service / "migrations"))
        cfg.attributes["url"] = f"sqlite+aiosqlite:///{tmp}/scratch.sqlite"
        cfg.attributes["version_table"] = f"alembic_version_{service}"
        command.upgrade(cfg, "head")
        command.revision(cfg, message=message, autogenerate=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
