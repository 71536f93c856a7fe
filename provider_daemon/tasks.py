"""Task intake and the task runner: accept a dispatch (fenced, bounded), run it, report it, and
drain on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from provider_daemon.executor import Executor, Outcome
from provider_daemon.fence import Fence
from provider_daemon.jobio import TransferFailed, Transfers
from provider_daemon.logstream import LogStream, resend_spooled
from provider_daemon.reporting import Reporter
from provider_daemon.settings import DaemonSettings
from provider_daemon.startgate import StartGate
from shared.contracts import AttemptRef, JobState, TaskCancel, TaskDispatch
from shared.db import utcnow
from shared.logging import correlation
from shared.loops import Backoff, every, retry
from shared.nats import Poison, PullConsumer, Retry

log = structlog.get_logger(__name__)

tasks_total = Counter("dante_daemon_tasks_total", "Tasks finished, by final state.", ["state"])
tasks_running = Gauge("dante_daemon_tasks_running", "Tasks running now.")


# A log that could not be stored at the end is tried again from disk: five more times, from
# 10 s doubling to a minute (the presigned URL lasts longer), or until the drain gives up.
ARCHIVE_ATTEMPTS = 5
ARCHIVE_BACKOFF = Backoff(base=5.0, cap=60.0, jitter=0.5)

log_archives_failed = Counter(
    "dante_daemon_log_archives_failed_total",
    "Whole-job logs never stored (every upload failed); the job's outcome is unchanged.",
)


@dataclass
class Running:
    task: TaskDispatch
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    draining: bool = False
    log_pending: bool = False  # the whole log is still to be stored (tried again later)


@dataclass
class TaskRunner:
    settings: DaemonSettings
    js: JetStreamContext
    transfers: Transfers
    executors: dict[str, Executor]
    fence: Fence
    reporter: Reporter
    # asks the scheduler before each start (issue 19); None: start without asking (tests that
    # drive a daemon with tasks no scheduler knows, DANTE_DAEMON_ASK_BEFORE_START=false)
    gate: StartGate | None = None
    running: dict[tuple[str, int], Running] = field(default_factory=dict)
    spooling: set[Path] = field(default_factory=set)  # log spools held by running streams
    stopping: bool = False
    _idle: asyncio.Event = field(default_factory=asyncio.Event)  # set while nothing runs
    _group: asyncio.TaskGroup | None = None

    def __post_init__(self) -> None:
        self.work_root = self.settings.state_dir / "work"
        self._idle.set()

    async def serve(self, consumer: PullConsumer, taking: asyncio.Event) -> None:
        """Take tasks until ``taking`` is set (the consumer's handler is :meth:`accept`); returns
        once every run started meanwhile is over."""
        async with asyncio.TaskGroup() as tg:
            self._group = tg
            await consumer.run(taking)
        self._group = None

    async def accept(self, msg: Msg) -> None:
        """The consumer's handler: a cancel, or a dispatch to start."""
        try:
            data = json.loads(msg.data)
        except ValueError as exc:
            raise Poison("task is not JSON") from exc
        if data.get("kind") == "cancel":
            self._cancel(data)
            return
        try:
            task = TaskDispatch.model_validate(data)
        except ValidationError as exc:
            raise Poison(f"invalid task: {exc.error_count()} errors") from exc
        key = (task.job_id, task.attempt)
        if key in self.fence:
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
        if self._group is None:
            raise Retry("not serving yet", delay=1.0)
        recorded = False  # the scheduler stored it as running already
        if self.gate is not None:
            answer = await self.gate.ask(task)  # no answer: Retry, it comes back later
            if not answer.start:
                log.warning(
                    "task.refused", job_id=task.job_id, attempt=task.attempt, reason=answer.reason
                )
                self.fence.remember(key)  # requeued or cancelled meanwhile: never start it
                return
            recorded = answer.recorded
        self.fence.remember(key)
        entry = Running(task)
        self.running[key] = entry
        self._idle.clear()
        if not recorded and not await self.reporter.report(task, JobState.RUNNING):
            self._finished(entry)  # the drain gave up on it: requeued when we go offline
            return
        self._group.create_task(self._run(entry))

    def held(self) -> list[AttemptRef]:
        """What the heartbeat says this host holds: attempts running now, and attempts finished
        whose final status is not yet published. The scheduler requeues any attempt it believes
        runs here that is not in this list (docs/daemon.md, "Reconciliation")."""
        keys = {
            *self.running,
            *(self.reporter.unreported.attempts() if self.reporter.unreported else ()),
        }
        return [AttemptRef(job_id=j, attempt=a) for j, a in sorted(keys)]

    def _cancel(self, data: dict[str, object]) -> None:
        try:
            cancel = TaskCancel.model_validate(data)
        except ValidationError as exc:
            raise Poison("invalid cancel") from exc
        key = (cancel.job_id, cancel.attempt)
        running = self.running.get(key)
        if running:
            log.info("task.cancel", job_id=cancel.job_id)
            running.cancel.set()
        elif key not in self.fence:
            # Not started yet: its task may still come (redelivered after a nak or a restart).
            # Fenced now, it is dropped as a duplicate when it does, on this run or the next.
            log.info("task.cancelled_before_start", job_id=cancel.job_id, attempt=cancel.attempt)
            self.fence.remember(key)

    def _finished(self, entry: Running) -> None:
        self.running.pop((entry.task.job_id, entry.task.attempt), None)
        if not self.running:
            self._idle.set()

    async def _run(self, entry: Running) -> None:
        task = entry.task
        tasks_running.inc()
        artifacts: list[str] = []
        with correlation(task.correlation_id, job_id=task.job_id, attempt=task.attempt):
            workdir = self.work_root / f"{task.job_id}-{task.attempt}"
            logfile = self.work_root / f"{task.job_id}-{task.attempt}.log"
            try:
                outcome, artifacts = await self._execute(entry, workdir, logfile)
            except Exception as exc:
                log.exception("task.crashed")
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                outcome = Outcome(JobState.FAILED, None, f"daemon error: {detail}")
            finally:
                tasks_running.dec()
                self._finished(entry)
            if entry.draining:
                outcome = Outcome(JobState.QUEUED, None, "provider drained before the task ended")
            log.info("task.finished", state=str(outcome.state), exit_code=outcome.exit_code)
            tasks_total.labels(str(outcome.state)).inc()
            await self.reporter.report(
                task, outcome.state, outcome.exit_code, outcome.error, artifacts
            )
            # The results are uploaded (or were never asked for): months of jobs must not fill
            # the disk. The log file stays only until it is uploaded or the attempt is reported.
            await asyncio.to_thread(shutil.rmtree, workdir, True)
            if entry.log_pending and self._group is not None:
                self._group.create_task(self._archive_later(task, logfile))
            else:
                logfile.unlink(missing_ok=True)

    async def _archive_later(self, task: TaskDispatch, logfile: Path) -> None:
        """Store a whole log whose upload failed at the end, from the file kept on disk."""
        upload = task.log_upload
        assert upload is not None
        with correlation(task.correlation_id, job_id=task.job_id, attempt=task.attempt):
            try:
                await retry(
                    "log_archive",
                    lambda: self.transfers.upload(upload, logfile),
                    attempts=ARCHIVE_ATTEMPTS,
                    backoff=ARCHIVE_BACKOFF,
                    stop=self.reporter.give_up,
                )
                log.info("log_archive.stored_late", key=upload.key)
            except Exception as exc:
                log_archives_failed.inc()
                log.error("log_archive.failed", key=upload.key, error=str(exc))
            finally:
                await asyncio.to_thread(logfile.unlink, missing_ok=True)

    async def resend_logs(self, stop: asyncio.Event) -> None:
        """The ``log_spool`` loop: log chunks spooled to disk (NATS was away) are sent again,
        also those a previous run of the daemon left (provider_daemon/logstream.py)."""
        interval = self.settings.log_spool_interval_seconds

        async def once() -> None:
            if await asyncio.to_thread(self.work_root.is_dir):
                await resend_spooled(self.js, self.work_root, self.spooling)

        backoff = Backoff(base=interval, cap=4 * interval, jitter=0.2, floor=interval)
        await every("log_spool", once, interval, stop=stop, backoff=backoff)

    async def _execute(
        self, entry: Running, workdir: Path, logfile: Path
    ) -> tuple[Outcome, list[str]]:
        """Inputs in, the executor, outputs and the whole log out."""
        task = entry.task
        rank = task.gang.rank if task.gang else 0
        (workdir / "outputs").mkdir(parents=True, exist_ok=True)
        async with LogStream(
            self.js,
            task.job_id,
            task.attempt,
            logfile,
            self.settings.log_flush_seconds,
            task.correlation_id,
            self.settings.log_publish_attempts,
            self.settings.log_live_max_bytes,
            busy=self.spooling,
            rank=rank,
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
        if entry.draining:  # a drained attempt runs again elsewhere, from scratch
            return outcome, []
        # A gang's ranks share one log object: rank 0's is archived, the others' lines live
        # on the LOGS stream only (marked with their rank there).
        log_upload = task.log_upload if rank == 0 else None
        stored = await self.transfers.store_outputs(
            task.outputs, workdir / "outputs", log_upload, logfile
        )
        if stored.errors and outcome.state == JobState.COMPLETED:
            outcome = Outcome(JobState.FAILED, outcome.exit_code, "; ".join(stored.errors))
        if stored.log_error is not None:
            # The log is not the job's result: the outcome stands, the job says so, and the
            # file is kept to be stored later (_archive_later).
            entry.log_pending = True
            note = f"log archive failed: {stored.log_error}; retrying from disk"
            log.warning("log_archive.deferred", error=stored.log_error)
            error = f"{outcome.error}; {note}" if outcome.error else note
            outcome = Outcome(outcome.state, outcome.exit_code, error)
        return outcome, stored.keys

    async def drain(self) -> None:
        """Let running tasks finish within the grace period, then hand the rest back; statuses
        that still cannot be published after that are given up on (the daemon must end)."""
        self.stopping = True
        if self.running:
            log.info(
                "daemon.draining",
                running=len(self.running),
                grace_s=self.settings.drain_grace_seconds,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.settings.drain_grace_seconds)
            for entry in list(self.running.values()):
                entry.draining = True
                entry.cancel.set()
        self.reporter.give_up.set()
        await self._idle.wait()
