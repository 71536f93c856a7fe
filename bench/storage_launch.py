"""The processes the storage benchmarks measure, started on free ports as real processes.

``weed mini`` (S3, signatures checked), a nats-server (the gateway needs JetStream to start),
two storage services (S3 and local-disk backends) and an API gateway routing
``/api/v1/storage`` to the S3-backed one. Tokens are signed with a throwaway key; the services
read its key set from a file instead of asking an auth service.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import typer

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.servers import free_port, nats_server, weed_mini  # noqa: E402

S3_ACCESS, S3_SECRET = "bench", "bench-secret-0123456789"
BUCKET = "dante"

cli = typer.Typer(add_completion=False, no_args_is_help=True)


@dataclass
class Platform:
    s3_endpoint: str
    token: str
    pids: dict[str, int] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(url)


def _token(keys: Any) -> str:
    now = int(time.time())
    return keys.sign({
        "iss": "dante-auth", "aud": "dante", "sub": str(uuid.uuid4()), "name": "bench",
        "role": "requester", "typ": "access", "jti": uuid.uuid4().hex,
        "iat": now, "nbf": now, "exp": now + 6 * 3600,
    })  # fmt: skip


@contextlib.contextmanager
def launched(workdir: Path, *, gateway: bool = True, local: bool = True) -> Iterator[Platform]:
    from auth_service.keys import KeyRing

    procs: list[subprocess.Popen] = []
    logs: list[IO[bytes]] = []
    (workdir / "weed").mkdir()
    keys = KeyRing(workdir / "keys")
    jwks_file = workdir / "jwks.json"
    jwks_file.write_text(json.dumps(keys.jwks()))

    def start(name: str, command: str, env: dict[str, str], ready: str) -> None:
        log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed at the end
        logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, __file__, command, "--jwks-file", str(jwks_file)],
            env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        procs.append(proc)
        wait_http(ready, proc)
        platform.pids[name] = proc.pid

    with (
        weed_mini(
            S3_ACCESS, S3_SECRET, bucket=BUCKET, volume_size_limit_mb=None, workdir=workdir
        ) as s3,
        nats_server(workdir / "nats") as nats_url,
    ):
        platform = Platform(s3.endpoint, _token(keys), {"weed": s3.pid})
        try:
            backends = ("s3", "local") if local else ("s3",)
            for backend in backends:
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                env = {
                    "DANTE_STORAGE_BACKEND": backend,
                    "DANTE_STORAGE_PORT": str(port),
                    "DANTE_STORAGE_ROOT_DIR": str(workdir / "objects"),
                    "DANTE_STORAGE_S3_ENDPOINT": s3.endpoint,
                    "DANTE_STORAGE_S3_ACCESS_KEY": S3_ACCESS,
                    "DANTE_STORAGE_S3_SECRET_KEY": S3_SECRET,
                    "DANTE_STORAGE_LOG_LEVEL": "WARNING",
                }
                start(f"storage-{backend}", "serve-storage", env, f"{url}/ready")
                platform.urls[f"storage-{backend}"] = url
            if gateway:
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                env = {
                    "DANTE_GATEWAY_PORT": str(port),
                    "DANTE_GATEWAY_NATS_URL": nats_url,
                    "DANTE_GATEWAY_STATIC_SERVICES": json.dumps(
                        {"storage": [platform.urls["storage-s3"]]}
                    ),
                    "DANTE_GATEWAY_LOG_LEVEL": "WARNING",
                    "DANTE_GATEWAY_UPSTREAM_TIMEOUT_SECONDS": "600",
                }
                start("gateway", "serve-gateway", env, f"{url}/health")
                platform.urls["gateway"] = url
            yield platform
        finally:
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            for log in logs:
                log.close()


def _keyset(jwks_file: Path) -> Any:
    keyset = json.loads(jwks_file.read_text())

    async def jwks() -> dict[str, Any]:
        return keyset

    return jwks


@cli.command("serve-storage")
def serve_storage(jwks_file: Path = typer.Option(...)) -> None:
    """A storage service that verifies tokens against a key set on disk (no auth service)."""
    from shared.app import serve, setup_logging
    from storage_service.main import create_app
    from storage_service.settings import StorageSettings

    settings = StorageSettings()
    setup_logging(settings)
    serve(create_app(settings, jwks=_keyset(jwks_file)), settings)


@cli.command("serve-gateway")
def serve_gateway(jwks_file: Path = typer.Option(...)) -> None:
    """The API gateway, verifying tokens against a key set on disk."""
    from api_gateway.main import create_app
    from api_gateway.settings import GatewaySettings
    from shared.app import serve, setup_logging

    settings = GatewaySettings()
    setup_logging(settings)
    serve(create_app(settings, jwks=_keyset(jwks_file)), settings)


if __name__ == "__main__":
    cli()
