"""Upload and download 1 GiB, streamed, and report throughput and every process's peak RSS.

Targets (each a PUT then a GET of the same object, bodies generated and discarded on the fly,
never held whole in memory):

* ``s3-direct``      straight to the S3 server (presigned URL; the baseline)
* ``storage-s3``     through the storage service, S3 backend
* ``storage-local``  through the storage service, local-disk backend
* ``gateway``        through the API gateway (``--gateway-url`` and ``--token``)

``--launch`` (the default) starts its own ``weed mini`` and storage services on free ports,
with a throwaway signing key and a token minted with it. Against a running platform, pass
``--no-launch --gateway-url URL --token TOKEN`` (and ``--gateway-pid`` / ``--storage-pid`` to
read those processes' peak RSS, when they run on this host).

    python bench/storage_throughput.py run --size-mib 1024
    python bench/storage_throughput.py run --no-launch --gateway-url http://127.0.0.1:8080 \\
        --token "$TOKEN" --gateway-pid 1234 --storage-pid 1235
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import typer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VENV_BIN = Path(sys.executable).parent
MiB = 1024 * 1024
BLOCK = MiB
S3_ACCESS, S3_SECRET = "bench", "bench-secret-0123456789"

cli = typer.Typer(add_completion=False, no_args_is_help=True)


# --- measuring --------------------------------------------------------------------------------


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM: the process's peak resident set since it started."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds each watched process spends between ``start()`` and ``stop()``."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self._start: dict[str, float] = {}

    def start(self) -> None:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        return {
            name: round(cpu_seconds(pid) - self._start[name], 1) for name, pid in self.pids.items()
        }


def generated(total: int) -> Iterator[bytes]:
    block = os.urandom(BLOCK)  # incompressible, and the same block reused: O(1) memory
    sent = 0
    while sent < total:
        n = min(BLOCK, total - sent)
        yield block if n == BLOCK else block[:n]
        sent += n


@dataclass
class Result:
    target: str
    size_mib: int
    upload_mib_s: float
    download_mib_s: float
    peak_rss_mib: dict[str, float | None]
    upload_cpu_s: dict[str, float]
    download_cpu_s: dict[str, float]


@dataclass
class Timings:
    upload_s: float
    download_s: float
    upload_cpu_s: dict[str, float]
    download_cpu_s: dict[str, float]


def transfer(
    client: httpx.Client,
    put_url: str,
    get_url: str,
    size: int,
    headers: dict[str, str],
    meter: CpuMeter,
) -> Timings:
    meter.start()
    start = time.perf_counter()
    resp = client.put(
        put_url,
        content=generated(size),
        headers={
            **headers,
            "Content-Length": str(size),
            "Content-Type": "application/octet-stream",
        },
    )
    if resp.status_code not in (200, 201):
        raise RuntimeError(f"PUT {resp.status_code}: {resp.text[:300]}")
    upload = time.perf_counter() - start
    upload_cpu = meter.stop()
    meter.start()
    start = time.perf_counter()
    got = 0
    with client.stream("GET", get_url, headers=headers) as stream:
        if stream.status_code != 200:
            raise RuntimeError(f"GET {stream.status_code}: {stream.read()[:300]!r}")
        for chunk in stream.iter_raw(BLOCK):
            got += len(chunk)
    download = time.perf_counter() - start
    if got != size:
        raise RuntimeError(f"downloaded {got} bytes, expected {size}")
    return Timings(upload, download, upload_cpu, meter.stop())


def via_api(client: httpx.Client, base: str, token: str, size: int, meter: CpuMeter) -> Timings:
    url = f"{base.rstrip('/')}/api/v1/storage/objects/bench/{uuid.uuid4().hex}.bin"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        return transfer(client, url, url, size, headers, meter)
    finally:
        client.delete(url, headers=headers)


def via_s3(client: httpx.Client, endpoint: str, size: int, meter: CpuMeter) -> Timings:
    from datetime import timedelta

    from minio import Minio

    s3 = Minio(endpoint, S3_ACCESS, S3_SECRET, secure=False, region="us-east-1")
    key = f"bench-direct/{uuid.uuid4().hex}.bin"
    put = s3.presigned_put_object("dante", key, expires=timedelta(hours=1))
    get = s3.presigned_get_object("dante", key, expires=timedelta(hours=1))
    try:
        return transfer(client, put, get, size, {}, meter)
    finally:
        s3.remove_object("dante", key)


# --- launching --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(url)


@contextlib.contextmanager
def launched(workdir: Path) -> Iterator[dict[str, Any]]:
    """weed mini (S3 with signatures checked) and two storage services (s3, local)."""
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        config = workdir / "s3.json"
        identity = {
            "name": "bench",
            "credentials": [{"accessKey": S3_ACCESS, "secretKey": S3_SECRET}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        (workdir / "weed").mkdir()
        s3_port = free_port()
        flags = [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ]
        weed_args = [
            str(VENV_BIN / "weed"), "mini", f"-dir={workdir / 'weed'}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", f"-s3.port={s3_port}", f"-s3.config={config}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            *(f"-{flag}={free_port()}" for flag in flags),
        ]  # fmt: skip
        log = open(workdir / "weed.log", "wb")  # noqa: SIM115 - closed at the end
        logs.append(log)
        weed = subprocess.Popen(weed_args, stdout=log, stderr=subprocess.STDOUT)
        procs.append(weed)
        endpoint = f"127.0.0.1:{s3_port}"

        from minio import Minio

        s3 = Minio(endpoint, S3_ACCESS, S3_SECRET, secure=False, region="us-east-1")
        deadline = time.monotonic() + 90
        while True:
            try:
                if not s3.bucket_exists("dante"):
                    s3.make_bucket("dante")
                break
            except Exception:
                if weed.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"weed mini did not start; see {workdir / 'weed.log'}"
                    ) from None
                time.sleep(0.5)

        from auth_service.keys import KeyRing

        keys = KeyRing(workdir / "keys")
        jwks_file = workdir / "jwks.json"
        jwks_file.write_text(json.dumps(keys.jwks()))
        now = int(time.time())
        token = keys.sign({
            "iss": "dante-auth", "aud": "dante", "sub": str(uuid.uuid4()), "name": "bench",
            "role": "requester", "typ": "access", "jti": uuid.uuid4().hex,
            "iat": now, "nbf": now, "exp": now + 3600,
        })  # fmt: skip

        services = {}
        for backend in ("s3", "local"):
            port = free_port()
            env = {
                **os.environ,
                "DANTE_STORAGE_BACKEND": backend,
                "DANTE_STORAGE_PORT": str(port),
                "DANTE_STORAGE_ROOT_DIR": str(workdir / "objects"),
                "DANTE_STORAGE_S3_ENDPOINT": endpoint,
                "DANTE_STORAGE_S3_ACCESS_KEY": S3_ACCESS,
                "DANTE_STORAGE_S3_SECRET_KEY": S3_SECRET,
                "DANTE_STORAGE_LOG_LEVEL": "WARNING",
            }
            log = open(workdir / f"storage-{backend}.log", "wb")  # noqa: SIM115
            logs.append(log)
            proc = subprocess.Popen(
                [sys.executable, __file__, "serve-storage", "--jwks-file", str(jwks_file)],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            )  # fmt: skip
            procs.append(proc)
            wait_http(f"http://127.0.0.1:{port}/ready", proc)
            services[backend] = (f"http://127.0.0.1:{port}", proc.pid)
        yield {"endpoint": endpoint, "weed_pid": weed.pid, "token": token, "services": services}
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()


# --- commands ---------------------------------------------------------------------------------


@cli.command()
def run(
    size_mib: int = typer.Option(1024, help="object size in MiB"),
    launch: bool = typer.Option(True, help="start weed mini and storage services here"),
    gateway_url: str | None = typer.Option(None, help="API gateway base URL"),
    token: str | None = typer.Option(None, help="bearer token for the gateway / storage"),
    gateway_pid: int | None = typer.Option(None, help="gateway pid, to read its peak RSS"),
    storage_url: str | None = typer.Option(None, help="a running storage service (no launch)"),
    storage_pid: int | None = typer.Option(None, help="storage pid, to read its peak RSS"),
    s3_endpoint: str | None = typer.Option(None, help="S3 host:port for s3-direct (no launch)"),
    json_out: Path | None = typer.Option(None, help="also write the results as JSON here"),
) -> None:
    size = size_mib * MiB
    results: list[Result] = []
    timeout = httpx.Timeout(600, connect=10)
    with (
        tempfile.TemporaryDirectory(prefix="dante-bench-") as tmp,
        httpx.Client(timeout=timeout) as client,
        contextlib.ExitStack() as stack,
    ):
        env: dict[str, Any] = {}
        if launch:
            env = stack.enter_context(launched(Path(tmp)))
            token = token or env["token"]
            s3_endpoint = env["endpoint"]

        def measure(target: str, base: str | None, pids: dict[str, int | None]) -> None:
            pids = {"bench-client": os.getpid(), **pids}
            if env:
                pids["weed"] = env["weed_pid"]
            meter = CpuMeter(pids)
            if base is None:
                t = via_s3(client, s3_endpoint or "", size, meter)
            else:
                t = via_api(client, base, token or "", size, meter)
            peaks = {name: peak_rss_mib(pid) for name, pid in meter.pids.items()}
            results.append(
                Result(
                    target,
                    size_mib,
                    round(size_mib / t.upload_s, 1),
                    round(size_mib / t.download_s, 1),
                    peaks,
                    t.upload_cpu_s,
                    t.download_cpu_s,
                )
            )

        if s3_endpoint:
            measure("s3-direct", None, {})
        if env:
            for backend, (url, pid) in env["services"].items():
                measure(f"storage-{backend}", url, {f"storage-{backend}": pid})
        if storage_url:
            measure("storage", storage_url, {"storage": storage_pid})
        if gateway_url:
            measure("gateway", gateway_url, {"gateway": gateway_pid, "storage": storage_pid})

    typer.echo(f"{'target':<14} {'up MiB/s':>9} {'down MiB/s':>11}  peak RSS MiB | CPU s up / down")
    for r in results:
        procs = ", ".join(
            f"{name} {rss:.0f} | {r.upload_cpu_s.get(name, 0)}/{r.download_cpu_s.get(name, 0)}"
            for name, rss in r.peak_rss_mib.items()
            if rss is not None
        )
        typer.echo(f"{r.target:<14} {r.upload_mib_s:>9} {r.download_mib_s:>11}  {procs}")
    base = next((r for r in results if r.target == "s3-direct"), None)
    for r in results:
        if base and r is not base:
            typer.echo(
                f"{r.target}: {r.upload_mib_s / base.upload_mib_s:.0%} of direct upload, "
                f"{r.download_mib_s / base.download_mib_s:.0%} of direct download"
            )
    if json_out:
        json_out.write_text(json.dumps([asdict(r) for r in results], indent=2))


@cli.command("serve-storage", hidden=True)
def serve_storage(jwks_file: Path = typer.Option(...)) -> None:
    """A storage service that verifies tokens against a key set on disk (no auth service)."""
    from shared.app import serve, setup_logging
    from storage_service.main import create_app
    from storage_service.settings import StorageSettings

    keyset = json.loads(jwks_file.read_text())

    async def jwks() -> dict[str, Any]:
        return keyset

    settings = StorageSettings()
    setup_logging(settings)
    serve(create_app(settings, jwks=jwks), settings)


if __name__ == "__main__":
    cli()
