"""``python -m shared.migrate`` (the Kubernetes migrations Job) against real databases."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("service", ["auth", "registry", "scheduler"])
def test_migrate_brings_a_fresh_database_to_head(service: str, tmp_path: Path) -> None:
    db = tmp_path / f"{service}.sqlite"
    prefix = {"auth": "DANTE_AUTH_", "registry": "DANTE_REGISTRY_", "scheduler": "DANTE_SCHEDULER_"}
    env = {**os.environ, f"{prefix[service]}DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    for _ in range(2):  # a second run (the next upgrade with nothing new) changes nothing
        proc = subprocess.run(
            [sys.executable, "-m", "shared.migrate", service],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")}
    assert f"alembic_version_{service}" in tables
    assert len(tables) > 2


def test_migrate_refuses_an_unknown_service() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "shared.migrate", "billing"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "usage" in proc.stderr
