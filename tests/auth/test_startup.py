"""Start-up: the first admin comes from settings; outside dev a default secret stops the
process before it serves anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.auth import auth_process


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "DANTE_AUTH_ADMIN_PASSWORD"),
        (
            {
                "DANTE_AUTH_ADMIN_PASSWORD": "a-real-admin-passphrase",
                "DANTE_AUTH_SERVICE_CLIENTS": '{"scheduler": "dante-dev-service-secret"}',
            },
            "DANTE_AUTH_SERVICE_CLIENTS",
        ),
    ],
)
def test_prod_refuses_to_start_with_a_default_secret(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DANTE_AUTH_")}
    full = {
        **inherited,
        "DANTE_AUTH_ENVIRONMENT": "prod",
        "DANTE_AUTH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/auth.sqlite",
        "DANTE_AUTH_KEY_DIR": str(tmp_path / "keys"),
        **env,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "auth_service", "serve"],
        env=full,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert named in proc.stderr
    assert not (tmp_path / "auth.sqlite").exists()  # refused before touching anything


def test_first_admin_comes_from_settings_in_prod(tmp_path: Path) -> None:
    password = "an operator chosen passphrase"
    with auth_process(
        tmp_path,
        ENVIRONMENT="prod",
        ADMIN_USERNAME="opsadmin",
        ADMIN_EMAIL="ops@example.com",
        ADMIN_PASSWORD=password,
        SERVICE_CLIENTS='{"scheduler": "' + "0123456789abcdefghijklmnopqrstuvwxyz" + '"}',
    ) as auth:
        r = auth.login("opsadmin", password)
        assert r.status_code == 200 and r.json()["role"] == "admin"
        assert auth.login("admin", "dante-dev-admin").status_code == 401
        headers = {"authorization": f"Bearer {r.json()['access_token']}"}
        users = auth.get("/api/v1/auth/users", headers).json()
        assert [u["username"] for u in users["users"]] == ["opsadmin"]
