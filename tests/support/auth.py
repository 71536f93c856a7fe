"""Auth fixtures: the auth service as a real process on a free port (SQLite or PostgreSQL)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.servers import free_port, spawned, wait_for_port
from tests.support.wait import eventually

SCHEDULER_SECRET = "test-scheduler-secret-" + uuid.uuid4().hex
PASSWORD = "correct horse battery"


@dataclass
class AuthProcess:
    url: str
    log_path: Path
    key_dir: Path
    proc: subprocess.Popen[bytes]

    def admin(self) -> dict[str, str]:
        """Bearer headers of the first admin (created from settings; dev password)."""
        from auth_service.settings import DEV_ADMIN_PASSWORD

        r = self.login("admin", DEV_ADMIN_PASSWORD)
        assert r.status_code == 200, r.text
        return {"authorization": f"Bearer {r.json()['access_token']}"}

    def get(self, path: str, headers: dict[str, str], **kw: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=headers, **kw)

    def post(self, path: str, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", headers=headers or {}, **kw)

    def wait_status(self, path: str, headers: dict[str, str], status: int) -> httpx.Response:
        """GET until it answers ``status`` (revocations reach verifiers within a poll)."""

        def answered() -> httpx.Response:
            r = self.get(path, headers)
            assert r.status_code == status, (r.status_code, r.text)
            return r

        return eventually(answered, limit=30, interval=0.1)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def register(self, role: str = "requester", password: str = PASSWORD) -> dict[str, Any]:
        name = f"u{uuid.uuid4().hex[:10]}"
        body = {"username": name, "email": f"{name}@example.com", "password": password}
        r = httpx.post(f"{self.url}/api/v1/auth/register", json={**body, "role": role})
        assert r.status_code == 201, r.text
        return {**body, **r.json()}

    def login(self, username: str, password: str = PASSWORD, **kw: Any) -> httpx.Response:
        body = {"username": username, "password": password}
        return httpx.post(f"{self.url}/api/v1/auth/login", json=body, **kw)

    def user(self, role: str = "requester") -> dict[str, Any]:
        """A registered, logged-in user: its fields plus ``headers`` with the bearer."""
        u = self.register(role)
        r = self.login(u["username"])
        assert r.status_code == 200, r.text
        tokens = r.json()
        return {**u, **tokens, "headers": {"authorization": f"Bearer {tokens['access_token']}"}}


@contextlib.contextmanager
def auth_process(root: Path, database_url: str | None = None, **env: str) -> Iterator[AuthProcess]:
    """``python -m auth_service serve``, as deployed; its log goes to ``root/auth.log``."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = {
        "ENVIRONMENT": "dev",
        "PORT": str(port),
        "DATABASE_URL": database_url or f"sqlite+aiosqlite:///{root}/auth.sqlite",
        "KEY_DIR": str(root / "keys"),
        "STATIC_SERVICES": json.dumps({"auth": [url]}),
        "SERVICE_CLIENTS": json.dumps({"scheduler": SCHEDULER_SECRET}),
        "LOG_JSON": "true",
        **env,
    }
    full_env = {**os.environ, **{f"DANTE_AUTH_{k}": v for k, v in settings.items()}}
    log_path = root / "auth.log"
    argv = [sys.executable, "-m", "auth_service", "serve"]
    with spawned(argv, full_env, log_path, cwd=root) as proc:
        wait_for_port(port, timeout=60, proc=proc)
        eventually(
            lambda: httpx.get(f"{url}/ready", timeout=5).status_code == 200,
            interval=0.1,
            what="auth service ready",
        )
        yield AuthProcess(url, log_path, root / "keys", proc)


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthProcess]:
    """One auth service (SQLite) shared by the auth tests; each test makes its own users."""
    # Per-IP throttling is tested on its own process; here every test is one client address.
    root = tmp_path_factory.mktemp("auth")
    with auth_process(
        root, REVOCATION_POLL_SECONDS="0.2", LOGIN_MAX_FAILURES_PER_IP="100000"
    ) as server:
        yield server
