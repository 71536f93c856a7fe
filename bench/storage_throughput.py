"""Upload and download 1 GiB, streamed, and report throughput and every process's peak RSS.

Targets (each a PUT then a GET of the same object, bodies generated and discarded on the fly,
never held whole in memory):

* ``s3-direct``      straight to the S3 server (presigned URL; the baseline)
* ``gateway``        through the API gateway, to the storage service, to S3
* ``storage-s3``     through the storage service, S3 backend
* ``storage-local``  through the storage service, local-disk backend

``--launch`` (the default) starts ``weed mini``, the services and a gateway on free ports
(``bench/storage_launch.py``). Peak RSS is each process's high-water mark, reset before each
target, so every figure belongs to the target it is printed with. Against a running
platform, pass ``--no-launch --gateway-url URL --token TOKEN`` (and ``--gateway-pid`` /
``--storage-pid`` to read those processes' RSS, when they run on this host).

    python bench/storage_throughput.py run --size-mib 1024 --repeat 3
    python bench/storage_throughput.py run --targets s3-direct,gateway --size-mib 256
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median

import httpx
import typer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from storage_launch import S3_ACCESS, S3_SECRET, launched  # noqa: E402

MiB = 1024 * 1024
BLOCK = MiB

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


def reset_peak_rss(pid: int) -> None:
    """Start VmHWM afresh (``clear_refs`` 5, Linux >= 4.0), so a peak belongs to one target."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


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

    def reset_peaks(self) -> None:
        for pid in self.pids.values():
            reset_peak_rss(pid)

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
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    got = (
        curl_get(get_url, headers)
        if CLIENT["download"] == "curl"
        else httpx_get(client, get_url, headers)
    )
    download = time.perf_counter() - start
    if got != size:
        raise RuntimeError(f"downloaded {got} bytes, expected {size}")
    download_cpu = meter.stop()
    if CLIENT["download"] == "curl":
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
        download_cpu["curl"] = round(used, 1)
    return Timings(upload, download, upload_cpu, download_cpu)


# Which client downloads: this process through httpx (pure Python parsing, so the client's own
# CPU competes with the services on a small machine), or curl, what the README's users run.
CLIENT = {"download": "httpx"}


def httpx_get(client: httpx.Client, url: str, headers: dict[str, str]) -> int:
    got = 0
    with client.stream("GET", url, headers=headers) as stream:
        if stream.status_code != 200:
            raise RuntimeError(f"GET {stream.status_code}: {stream.read()[:300]!r}")
        for chunk in stream.iter_raw(BLOCK):
            got += len(chunk)
    return got


def curl_get(url: str, headers: dict[str, str]) -> int:
    curl = shutil.which("curl")
    if curl is None:
        raise RuntimeError("--client curl needs curl on the PATH")
    argv = [curl, "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    done = subprocess.run([*argv, url], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"curl GET failed ({done.returncode}): {done.stderr.strip()[:300]}")
    return int(done.stdout)


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


# --- commands ---------------------------------------------------------------------------------


TARGETS = ("s3-direct", "gateway", "storage-s3", "storage-local")


@cli.command()
def run(
    size_mib: int = typer.Option(1024, help="object size in MiB"),
    targets: str = typer.Option(",".join(TARGETS), help="comma-separated, from " + str(TARGETS)),
    repeat: int = typer.Option(1, help="measure each target this many times, interleaved"),
    launch: bool = typer.Option(True, help="start weed mini, storage and a gateway here"),
    gateway_url: str | None = typer.Option(None, help="API gateway base URL (no launch)"),
    token: str | None = typer.Option(None, help="bearer token for the gateway / storage"),
    gateway_pid: int | None = typer.Option(None, help="gateway pid, to read its peak RSS"),
    storage_url: str | None = typer.Option(None, help="a running storage service (no launch)"),
    storage_pid: int | None = typer.Option(None, help="storage pid, to read its peak RSS"),
    s3_endpoint: str | None = typer.Option(None, help="S3 host:port for s3-direct (no launch)"),
    json_out: Path | None = typer.Option(None, help="also write the results as JSON here"),
    client_name: str = typer.Option(
        "httpx", "--client", help="who downloads: httpx (this process) or curl (a subprocess)"
    ),
) -> None:
    if client_name not in ("httpx", "curl"):
        raise typer.BadParameter("--client must be httpx or curl")
    CLIENT["download"] = client_name
    size = size_mib * MiB
    wanted = [t.strip() for t in targets.split(",") if t.strip()]
    results: list[Result] = []
    timeout = httpx.Timeout(600, connect=10)
    with (
        tempfile.TemporaryDirectory(prefix="dante-bench-") as tmp,
        httpx.Client(timeout=timeout) as client,
        contextlib.ExitStack() as stack,
    ):
        urls: dict[str, str] = {}
        pids: dict[str, int | None] = {}
        if launch:
            platform = stack.enter_context(
                launched(Path(tmp), gateway="gateway" in wanted, local="storage-local" in wanted)
            )
            token = token or platform.token
            s3_endpoint = platform.s3_endpoint
            urls, pids = platform.urls, dict(platform.pids)
        else:
            urls = {"gateway": gateway_url or "", "storage-s3": storage_url or ""}
            pids = {"gateway": gateway_pid, "storage-s3": storage_pid}
        # Which processes each target passes through (their RSS and CPU are reported).
        path = {
            "s3-direct": ["weed"],
            "gateway": ["gateway", "storage-s3", "weed"],
            "storage-s3": ["storage-s3", "weed"],
            "storage-local": ["storage-local"],
        }

        def measure(target: str) -> None:
            watched = {"bench-client": os.getpid(), **{n: pids.get(n) for n in path[target]}}
            meter = CpuMeter(watched)
            meter.reset_peaks()
            if target == "s3-direct":
                t = via_s3(client, s3_endpoint or "", size, meter)
            else:
                t = via_api(client, urls[target], token or "", size, meter)
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
            typer.echo(describe(results[-1]), err=True)

        for _ in range(repeat):
            for target in wanted:
                if target == "s3-direct" and not s3_endpoint:
                    continue
                if target != "s3-direct" and not urls.get(target):
                    continue
                measure(target)

    typer.echo(f"{'target':<14} {'up MiB/s':>9} {'down MiB/s':>11}  peak RSS MiB | CPU s up/down")
    for r in results:
        typer.echo(describe(r))
    for target in wanted:
        mine = [r for r in results if r.target == target]
        base = [r for r in results if r.target == "s3-direct"]
        if not mine or not base or target == "s3-direct":
            continue
        up = median(r.upload_mib_s for r in mine) / median(r.upload_mib_s for r in base)
        down = median(r.download_mib_s for r in mine) / median(r.download_mib_s for r in base)
        typer.echo(f"{target}: {up:.0%} of direct upload, {down:.0%} of direct download (medians)")
    if json_out:
        json_out.write_text(json.dumps([asdict(r) for r in results], indent=2))


def describe(r: Result) -> str:
    procs = ", ".join(
        f"{name} {rss:.0f} | {r.upload_cpu_s.get(name, 0)}/{r.download_cpu_s.get(name, 0)}"
        for name, rss in r.peak_rss_mib.items()
        if rss is not None
    )
    extra = "".join(f", {n} -/{c}" for n, c in r.download_cpu_s.items() if n not in r.peak_rss_mib)
    return f"{r.target:<14} {r.upload_mib_s:>9} {r.download_mib_s:>11}  {procs}{extra}"


@cli.callback()
def main() -> None:
    """Storage throughput benchmark."""


if __name__ == "__main__":
    cli()
