"""The daemon under test as a real process against a real local cluster (``daemon_cluster``:
nats-server, auth, registry, scheduler, storage and gateway as real processes on free ports).

Each test gets daemons with their own provider account and API key, so their durable
consumers and fence files never meet. Tasks are published straight onto the daemon's
``tasks.dispatch.<provider_id>`` subject; statuses and log chunks are read with plain NATS
subscriptions (the scheduler keeps its own work-queue consumer on STATUS and ignores jobs it
does not know).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from localdev.cluster import LocalCluster
from shared.contracts import TERMINAL_STATES, LogChunk, TaskCancel, TaskDispatch, TaskStatus
from tests.support.accounts import provider_key
from tests.support.servers import free_port
from tests.support.wait import eventually

# what a daemon reports last: a terminal state, or "queued" when it hands a drained task back
TERMINAL = TERMINAL_STATES | {"queued"}


@dataclass
class Daemon:
    popen: subprocess.Popen[bytes]
    provider_id: str
    state_dir: Path
    log_path: Path
    port: int

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def wait_event(self, name: str, limit: float = 60, **fields: Any) -> dict[str, Any]:
        """Wait for a log event; the bound only stops a hung run."""

        def find() -> dict[str, Any] | None:
            return next(
                (
                    e
                    for e in self.log_events()
                    if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())
                ),
                None,
            )

        return eventually(
            find, limit=limit, interval=0.1, what=f"{name} {fields} in {self.log_path}"
        )

    async def await_event(self, name: str, limit: float = 60, **fields: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.wait_event, name, limit, **fields)

    def stop(self, timeout: float = 60) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)


def _limit_files(size: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


@dataclass
class DaemonFactory:
    cluster: LocalCluster
    root: Path
    started: list[Daemon] = field(default_factory=list)

    def start(
        self,
        creds: dict[str, str] | None = None,
        *,
        file_size_limit: int | None = None,
        **settings: Any,
    ) -> Daemon:
        """A daemon with ``DANTE_DAEMON_<KEY>`` ``settings``; ``file_size_limit`` (bytes) is the
        kernel's RLIMIT_FSIZE for it: a file it writes past that fails (EFBIG), as on a full
        disk."""
        creds = creds or provider_key(self.cluster.gateway_url)
        n = len(self.started)
        state = settings.pop("state_dir", None) or self.root / f"daemon-{n}"
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DANTE_")}
        values = {
            "gateway_url": self.cluster.gateway_url,
            "nats_url": self.cluster.nats_url,
            "api_key": creds["api_key"],
            "state_dir": str(state),
            "port": str(port),
            "log_json": "true",
            "heartbeat_interval_seconds": "1",
            "drain_grace_seconds": "5",
            # these tests hand-publish tasks no scheduler knows, which it would refuse to let
            # start; tests/daemon/test_start_gate.py turns the question back on
            "ask_before_start": "false",
            **{k: str(v) for k, v in settings.items()},
        }
        env.update({f"DANTE_DAEMON_{k.upper()}": v for k, v in values.items()})
        log_path = self.root / f"daemon-{n}-{uuid.uuid4().hex[:6]}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "provider_daemon", "run"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=None if file_size_limit is None else _limit_files(file_size_limit),
            )
        daemon = Daemon(popen, creds["provider_id"], Path(state), log_path, port)
        self.started.append(daemon)

        def ready() -> bool:
            if popen.poll() is not None:
                raise AssertionError(f"daemon exited {popen.returncode}: {log_path.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200
            return False

        eventually(ready, interval=0.1, what=f"daemon {n} ready")
        daemon.wait_event("daemon.ready")
        return daemon

    def stop_all(self) -> None:
        for d in self.started:
            if d.popen.poll() is None:
                d.popen.send_signal(signal.SIGTERM)
                try:
                    d.popen.wait(30)
                except subprocess.TimeoutExpired:
                    d.popen.kill()
                    d.popen.wait()


@pytest.fixture
def daemons(daemon_cluster: LocalCluster, tmp_path: Path) -> Iterator[DaemonFactory]:
    factory = DaemonFactory(daemon_cluster, tmp_path)
    yield factory
    factory.stop_all()


class Bus:
    """Publishes tasks to daemons and records what they report, through a real nats-server."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.statuses: dict[str, list[TaskStatus]] = {}
        self.chunks: dict[str, list[LogChunk]] = {}
        self.changed = asyncio.Condition()

    async def start(self) -> None:
        async def on_status(msg: Any) -> None:
            st = TaskStatus.model_validate_json(msg.data)
            async with self.changed:
                self.statuses.setdefault(st.job_id, []).append(st)
                self.changed.notify_all()

        async def on_log(msg: Any) -> None:
            chunk = LogChunk.model_validate_json(msg.data)
            async with self.changed:
                self.chunks.setdefault(chunk.job_id, []).append(chunk)
                self.changed.notify_all()

        await self.nc.subscribe("jobs.status.*", cb=on_status)
        await self.nc.subscribe("jobs.logs.*", cb=on_log)

    async def dispatch(
        self, provider_id: str, script: str, *, msg_id: str | None = None, **fields: Any
    ) -> TaskDispatch:
        task = TaskDispatch(
            job_id=fields.pop("job_id", None) or str(uuid.uuid4()),
            attempt=fields.pop("attempt", 1),
            provider_id=provider_id,
            type=fields.pop("type", "script"),
            name="daemon-test",
            spec=fields.pop("spec", None) or {"params": {"script_content": script}},
            **fields,
        )
        await self.js.publish(
            f"tasks.dispatch.{provider_id}",
            task.model_dump_json().encode(),
            headers={"Nats-Msg-Id": msg_id or uuid.uuid4().hex},
        )
        return task

    async def cancel(self, task: TaskDispatch) -> None:
        msg = TaskCancel(job_id=task.job_id, attempt=task.attempt, provider_id=task.provider_id)
        await self.js.publish(f"tasks.dispatch.{task.provider_id}", msg.model_dump_json().encode())

    async def wait_for(self, pred: Callable[[], Any], limit: float = 60) -> Any:
        """Wait until ``pred()`` is truthy; the bound only stops a hung run."""
        async with asyncio.timeout(limit), self.changed:
            while not (found := pred()):
                await self.changed.wait()
            return found

    async def state(self, job_id: str, state: str, limit: float = 60) -> TaskStatus:
        def find() -> TaskStatus | None:
            return next((s for s in self.statuses.get(job_id, []) if s.state == state), None)

        return await self.wait_for(find, limit)

    async def final(self, job_id: str, limit: float = 60) -> TaskStatus:
        def find() -> TaskStatus | None:
            return next((s for s in self.statuses.get(job_id, []) if s.state in TERMINAL), None)

        return await self.wait_for(find, limit)

    def lines(self, job_id: str) -> list[str]:
        return [line for c in self.chunks.get(job_id, []) for line in c.lines]


@pytest.fixture
async def bus(daemon_cluster: LocalCluster) -> AsyncIterator[Bus]:
    nc = await nats.connect(daemon_cluster.nats_url)
    b = Bus(nc)
    await b.start()
    yield b
    await nc.close()


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone: it runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[2]) == pgid:
                out.append(int(entry.name))
    return out


def check(tmp_path: Path, **values: str) -> subprocess.CompletedProcess[str]:
    """``dante-provider check`` as a real process with ``DANTE_DAEMON_<KEY>`` settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DANTE_", "DOCKER_"))}
    env.update({f"DANTE_DAEMON_{k.upper()}": v for k, v in values.items()})
    env["DANTE_DAEMON_STATE_DIR"] = str(tmp_path / "state")
    env["DANTE_DAEMON_DOCKER_URL"] = f"unix://{tmp_path}/no-docker.sock"
    return subprocess.run(
        [sys.executable, "-m", "provider_daemon", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def rows(out: str) -> dict[str, tuple[str, str]]:
    """The table ``check`` prints: dependency → (ok|warn|FAIL, detail)."""
    found = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 3 and cells[1] in ("ok", "warn", "FAIL"):
            found[cells[0]] = (cells[1], cells[2])
    return found
