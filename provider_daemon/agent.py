"""The daemon's life: register, then heartbeats, tasks and the health server in one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
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

from provider_daemon.client import CredentialsRejected, GatewayClient
from provider_daemon.executor import Outcome, ProcessExecutor
from provider_daemon.inventory import Inventory, Nvml, collect
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
    close_nats,
    connect,
    ensure_streams,
    publish,
)

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
        self.executor = ProcessExecutor(settings.state_dir / "work")
        self._group: asyncio.TaskGroup | None = None
        self._idle = asyncio.Event()  # set whenever no task is running
        self._idle.set()

    # --- identity ----------------------------------------------------------------------------

    def _load_state(self) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        if self.fence_path.exists():
            for line in self.fence_path.read_text().splitlines():
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

    async def heartbeat_loop(self, stop: asyncio.Event) -> None:
        assert self.client and self.nvml
        interval = self.settings.heartbeat_interval_seconds
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval * random.uniform(0.8, 1.2))
            if stop.is_set():
                return
            body = {"gpus": self.nvml.metrics(), "running_tasks": len(self.running)}
            try:
                await self.client.heartbeat(body)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 404:  # the registry forgot us: register again
                    await backoff_retry("register", self.register, stop)
                else:
                    log.warning("heartbeat.failed", status=exc.response.status_code)
            except Exception as exc:  # outage: tasks go on; the next beat tries again
                log.warning("heartbeat.failed", error=str(exc) or type(exc).__name__)

    async def on_task(self, msg: Msg) -> None:
        data = json.loads(msg.data)
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
        with correlation(task.correlation_id, job_id=task.job_id, attempt=task.attempt):
            outcome: Outcome
            try:
                assert self.js is not None
                workdir = self.executor.work_root / f"{task.job_id}-{task.attempt}"
                workdir.mkdir(parents=True, exist_ok=True)
                async with LogStream(
                    self.js,
                    task.job_id,
                    task.attempt,
                    workdir / "output.log",
                    self.settings.log_flush_seconds,
                    task.correlation_id,
                ) as stream:
                    outcome = await self.executor.run(task, stream.line, entry.cancel)
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
            await self.report(task, outcome.state, outcome.exit_code, outcome.error)

    async def report(
        self,
        task: TaskDispatch,
        state: JobState,
        exit_code: int | None = None,
        error: str | None = None,
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
        async with httpx.AsyncClient(timeout=10) as http:
            self.client = GatewayClient(s.gateway_url, s.api_key, http)
            provider_id = await backoff_retry("register", self.register, stop)
            nc = await connect(s.nats_url, f"daemon-{provider_id}")
            self.js = nc.jetstream()
            await backoff_retry(
                "streams", lambda: ensure_streams(self.js, ["TASKS", "STATUS", "LOGS"]), stop
            )
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
                    log.info("daemon.ready", provider_id=provider_id)
                    await stop.wait()
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
