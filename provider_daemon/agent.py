"""The daemon's life: register, then heartbeats, tasks and the health server in one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog
import uvicorn
from fastapi import FastAPI
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from provider_daemon import metrics
from provider_daemon.client import CredentialsRejected, GatewayClient
from provider_daemon.docker_executor import DockerExecutor
from provider_daemon.executor import Executor, Outcome, ProcessExecutor
from provider_daemon.inventory import Inventory, Nvml, collect
from provider_daemon.jobio import TransferFailed, Transfers
from provider_daemon.logstream import LogStream
from provider_daemon.settings import DaemonSettings
from shared.app import create_service_app
from shared.contracts import JobState, TaskCancel, TaskDispatch, TaskStatus
from shared.db import utcnow
from shared.logging import correlation
from shared.nats import (
    Poison,
    PullConsumer,
    Retry,
    UserCredentials,
    close_nats,
    connect,
    publish,
)
from shared.nats_auth import KeyPair

log = structlog.get_logger(__name__)

tasks_total = Counter("dante_daemon_tasks_total", "Tasks finished, by final state.", ["state"])
tasks_running = Gauge("dante_daemon_tasks_running", "Tasks running now.")


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the agent's stop event decides when to exit."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Running:
    task: TaskDispatch
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    draining: bool = False


class Stopped(Exception):
    """We were told to stop while still retrying."""


async def backoff_retry(what: str, fn: Any, stop: asyncio.Event, cap: float = 30.0) -> Any:
    """Retry ``fn`` with jittered exponential back-off until it works or we are told to stop."""
    delay = 0.5
    while True:
        try:
            return await fn()
        except CredentialsRejected:
            raise
        except Exception as exc:
            log.warning(
                f"{what}.retry", error=str(exc) or type(exc).__name__, delay=round(delay, 1)
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay * random.uniform(0.5, 1.5))
            if stop.is_set():
                raise Stopped(what) from None
            delay = min(cap, delay * 2)


class Agent:
    def __init__(self, settings: DaemonSettings, nvml: Nvml | None = None) -> None:
        self.settings = settings
        self.nvml = nvml
        self.running: dict[tuple[str, int], Running] = {}
        self.fence_path = settings.state_dir / "seen-tasks.jsonl"
        self.seen: set[tuple[str, int]] = set()
        self.js: JetStreamContext | None = None
        self.client: GatewayClient | None = None
        self.inventory: Inventory | None = None
        self.work_root = settings.state_dir / "work"
        self.executors: dict[str, Executor] = {
            "script": ProcessExecutor(),
            "container": DockerExecutor(
                settings.docker_url, settings.docker_pull_timeout_seconds, settings.docker_pull
            ),
        }
        self.transfers: Transfers | None = None
        self.stopping = False
        self.heartbeat_failures = 0
        self._group: asyncio.TaskGroup | None = None
        self._idle = asyncio.Event()  # set whenever no task is running
        self._idle.set()

    # --- identity ----------------------------------------------------------------------------

    def _load_state(self) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        if self.fence_path.exists():
            lines = self.fence_path.read_text().splitlines()
            if len(lines) > self.settings.fence_keep:  # months of tasks: keep the newest only
                lines = lines[-self.settings.fence_keep :]
                tmp = self.fence_path.with_suffix(".tmp")
                tmp.write_text("".join(line + "\n" for line in lines))
                tmp.replace(self.fence_path)
            for line in lines:
                job_id, attempt = json.loads(line)
                self.seen.add((job_id, attempt))

    def _save_identity(self, provider_id: str) -> None:
        path = self.settings.state_dir / "provider.json"
        known = json.loads(path.read_text()) if path.exists() else {}
        if known.get("provider_id") not in (None, provider_id):
            log.warning("provider.identity_changed", old=known.get("provider_id"), new=provider_id)
        path.write_text(json.dumps({"provider_id": provider_id}))

    async def register(self) -> str:
        assert self.client and self.inventory
        body = {
            "name": self.settings.name,
            "hostname": self.settings.name,
            "max_concurrent_tasks": self.settings.max_concurrent_tasks,
            "price_per_hour": self.settings.price_per_hour,
            "labels": self.settings.labels,
            **self.inventory.registration(),
        }
        provider = await self.client.register(body)
        self._save_identity(provider["id"])
        log.info(
            "provider.registered",
            provider_id=provider["id"],
            gpus=len(self.inventory.gpus),
            cpus=self.inventory.cpu_count,
        )
        return provider["id"]

    # --- loops -------------------------------------------------------------------------------

    def next_beat(self) -> float:
        """Seconds to the next heartbeat: the interval with ±20 % jitter (so a fleet restarted
        together does not beat in step), doubling per consecutive failure up to the cap."""
        s = self.settings
        base = min(
            s.heartbeat_max_backoff_seconds,
            s.heartbeat_interval_seconds * 2 ** min(self.heartbeat_failures, 10),
        )
        return max(s.heartbeat_interval_seconds, base) * random.uniform(0.8, 1.2)

    async def heartbeat_loop(self, stop: asyncio.Event) -> None:
        assert self.client and self.nvml
        delay = self.next_beat()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            body = {"gpus": self.nvml.metrics(), "running_tasks": len(self.running)}
            metrics.record_gpus(self.client.provider_id, body["gpus"], self.inventory)
            try:
                await self.client.heartbeat(body)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 404:  # the registry forgot us: register again
                    await backoff_retry("register", self.register, stop)
                    self.heartbeat_failures = 0
                    delay = self.next_beat()
                    continue
                delay = self._beat_failed(f"HTTP {exc.response.status_code}")
                continue
            except Exception as exc:  # outage: tasks go on; the next beat tries again
                delay = self._beat_failed(str(exc) or type(exc).__name__)
                continue
            if self.heartbeat_failures:
                log.info("heartbeat.resumed", after_failures=self.heartbeat_failures)
            self.heartbeat_failures = 0
            delay = self.next_beat()

    def _beat_failed(self, error: str) -> float:
        self.heartbeat_failures += 1
        delay = self.next_beat()
        log.warning(
            "heartbeat.failed", error=error, failures=self.heartbeat_failures, next_in_s=delay
        )
        return delay

    async def on_task(self, msg: Msg) -> None:
        try:
            data = json.loads(msg.data)
        except ValueError as exc:
            raise Poison("task is not JSON") from exc
        if data.get("kind") == "cancel":
            try:
                cancel = TaskCancel.model_validate(data)
            except ValidationError as exc:
                raise Poison("invalid cancel") from exc
            running = self.running.get((cancel.job_id, cancel.attempt))
            if running:
                log.info("task.cancel", job_id=cancel.job_id)
                running.cancel.set()
            return
        try:
            task = TaskDispatch.model_validate(data)
        except ValidationError as exc:
            raise Poison(f"invalid task: {exc.error_count()} errors") from exc
        key = (task.job_id, task.attempt)
        if key in self.seen:
            log.info("task.duplicate", job_id=task.job_id, attempt=task.attempt)
            return
        if self.stopping:  # draining: leave it in the stream for the next start
            raise Retry("draining", delay=5.0)
        if task.start_deadline is not None and task.start_deadline < utcnow():
            # The scheduler has requeued this attempt already; running it would double the work.
            log.warning("task.expired", job_id=task.job_id, attempt=task.attempt)
            return
        if len(self.running) >= self.settings.max_concurrent_tasks:
            raise Retry("at the concurrency limit", delay=2.0)
        self.seen.add(key)
        with self.fence_path.open("a") as fh:
            fh.write(json.dumps([task.job_id, task.attempt]) + "\n")
        entry = Running(task)
        self.running[key] = entry
        self._idle.clear()
        await self.report(task, JobState.RUNNING)
        assert self._group is not None
        self._group.create_task(self._execute(entry))

    async def _execute(self, entry: Running) -> None:
        task = entry.task
        tasks_running.inc()
        artifacts: list[str] = []
        with correlation(task.correlation_id, job_id=task.job_id, attempt=task.attempt):
            outcome: Outcome
            workdir = self.work_root / f"{task.job_id}-{task.attempt}"
            logfile = self.work_root / f"{task.job_id}-{task.attempt}.log"
            try:
                assert self.js is not None and self.transfers is not None
                (workdir / "outputs").mkdir(parents=True, exist_ok=True)
                async with LogStream(
                    self.js,
                    task.job_id,
                    task.attempt,
                    logfile,
                    self.settings.log_flush_seconds,
                    task.correlation_id,
                ) as stream:
                    try:
                        await self.transfers.fetch_inputs(task.inputs, workdir / "inputs")
                    except TransferFailed as exc:
                        outcome = Outcome(JobState.FAILED, None, f"input not available: {exc}")
                        await stream.line(f"dante: {outcome.error}")
                    else:
                        executor = self.executors.get(task.type)
                        if executor is None:
                            outcome = Outcome(JobState.FAILED, None, f"no executor for {task.type}")
                        else:
                            outcome = await executor.run(task, workdir, stream.line, entry.cancel)
                if not entry.draining:  # a drained attempt runs again elsewhere, from scratch
                    artifacts, errors = await self.transfers.store_outputs(
                        task.outputs, workdir / "outputs", task.log_upload, logfile
                    )
                    if errors and outcome.state == JobState.COMPLETED:
                        outcome = Outcome(JobState.FAILED, outcome.exit_code, "; ".join(errors))
            except Exception as exc:
                log.exception("task.crashed")
                outcome = Outcome(JobState.FAILED, None, f"daemon error: {exc}")
            finally:
                tasks_running.dec()
                self.running.pop((task.job_id, task.attempt), None)
                if not self.running:
                    self._idle.set()
            if entry.draining:
                outcome = Outcome(JobState.QUEUED, None, "provider drained before the task ended")
            log.info("task.finished", state=str(outcome.state), exit_code=outcome.exit_code)
            tasks_total.labels(str(outcome.state)).inc()
            await self.report(task, outcome.state, outcome.exit_code, outcome.error, artifacts)
            # The results are uploaded (or were never asked for): months of jobs must not fill
            # the disk. The log file stays only until it is uploaded or the attempt is reported.
            await asyncio.to_thread(shutil.rmtree, workdir, True)
            logfile.unlink(missing_ok=True)

    async def report(
        self,
        task: TaskDispatch,
        state: JobState,
        exit_code: int | None = None,
        error: str | None = None,
        artifacts: list[str] | None = None,
    ) -> None:
        """Publish a status; retried until the stream has it, since the scheduler relies on it."""
        assert self.js is not None
        status = TaskStatus(
            job_id=task.job_id,
            attempt=task.attempt,
            provider_id=task.provider_id,
            state=state,
            exit_code=exit_code,
            error=error,
            at=utcnow(),
            artifacts=artifacts or [],
        )

        async def send() -> None:
            await publish(
                self.js,
                f"jobs.status.{task.job_id}",
                status,  # type: ignore[arg-type]
                msg_id=f"{task.job_id}:{task.attempt}:{state}",
                correlation_id=task.correlation_id,
            )

        await backoff_retry("status", send, asyncio.Event(), cap=5.0)

    async def renew_nats_jwt(
        self, creds: UserCredentials, expires_at: str, stop: asyncio.Event
    ) -> None:
        """Fetch a fresh NATS JWT at two thirds of the current one's life. The server closes
        the connection when a JWT expires; the reconnect then presents the fresh one."""
        assert self.client is not None
        while not stop.is_set():
            left = datetime.fromisoformat(expires_at).timestamp() - time.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(1.0, left * 2 / 3))
            if stop.is_set():
                return
            try:
                issued = await self.client.nats_credentials(creds.key.public_key)
            except Exception as exc:  # an outage: try again in a while, the old JWT still works
                log.warning("nats.renew_failed", error=str(exc) or type(exc).__name__)
                expires_at = datetime.fromtimestamp(time.time() + 30, UTC).isoformat()
                continue
            if issued is None:
                return
            creds.jwt = issued["jwt"]
            expires_at = issued["expires_at"]
            log.info("nats.jwt_renewed", expires_at=expires_at)

    async def drain(self) -> None:
        """Let running tasks finish within the grace period, then hand the rest back."""
        if not self.running:
            return
        log.info(
            "daemon.draining", running=len(self.running), grace_s=self.settings.drain_grace_seconds
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.settings.drain_grace_seconds)
        for entry in list(self.running.values()):
            entry.draining = True
            entry.cancel.set()
        await self._idle.wait()

    # --- health ------------------------------------------------------------------------------

    def health_app(self, nc: Any) -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
            yield

        app = create_service_app(self.settings, title="Dante provider daemon", lifespan=lifespan)
        app.state.ready_checks["nats"] = lambda: nc.flush(timeout=2)

        async def registered() -> None:
            if not (self.client and self.client.provider_id):
                raise RuntimeError("not registered")

        app.state.ready_checks["registered"] = registered
        return app

    # --- main --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        self._load_state()
        self.nvml = self.nvml or Nvml()
        self.inventory = collect(self.nvml)
        async with (
            httpx.AsyncClient(timeout=10) as http,
            httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10)) as io_http,
        ):
            self.client = GatewayClient(s.gateway_url, s.api_key, http)
            self.transfers = Transfers(io_http)
            provider_id = await backoff_retry("register", self.register, stop)
            # The nkey is made here and its seed never leaves this process; the platform signs
            # a JWT for its public half that allows this provider's own tasks only.
            key = KeyPair.generate("user")
            issued = await backoff_retry(
                "nats_credentials", lambda: self.client.nats_credentials(key.public_key), stop
            )
            creds = None
            if issued is not None:
                creds = UserCredentials(key, issued["jwt"], issued["inbox_prefix"])
            nc = await connect(s.nats_url, f"daemon-{provider_id}", creds)
            self.js = nc.jetstream()
            # Streams are the services' to create (a daemon's NATS user may not): wait for them.
            await backoff_retry("streams", lambda: self.js.stream_info("TASKS"), stop)
            consumer = PullConsumer(
                self.js,
                "TASKS",
                f"daemon-{provider_id}",
                f"tasks.dispatch.{provider_id}",
                self.on_task,
                batch=8,
                idle_poll=1.0,
                ack_wait=60,
            )
            server = _QuietServer(
                uvicorn.Config(
                    self.health_app(nc), host=s.host, port=s.port, log_config=None, access_log=False
                )
            )
            taking = asyncio.Event()  # the consumer's own stop: set first, so drain is two-step
            try:
                async with asyncio.TaskGroup() as tg:
                    self._group = tg
                    tg.create_task(server.serve())
                    tg.create_task(self.heartbeat_loop(stop))
                    tg.create_task(consumer.run(taking))
                    if creds is not None:
                        tg.create_task(self.renew_nats_jwt(creds, issued["expires_at"], stop))
                    log.info("daemon.ready", provider_id=provider_id)
                    await stop.wait()
                    self.stopping = True
                    taking.set()
                    await self.drain()
                    server.should_exit = True
            finally:
                await close_nats(nc)
                self.nvml.close()
        log.info("daemon.stopped")


def state_provider_id(state_dir: Path) -> str | None:
    path = state_dir / "provider.json"
    return json.loads(path.read_text()).get("provider_id") if path.exists() else None
