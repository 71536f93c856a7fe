"""The scheduler's long-running loops: three JetStream consumers and the placement loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from scheduler import confirm, leases, metrics
from scheduler.billing import HttpBilling, outbox_loop
from scheduler.dispatch import HardwareCache, Placer, Presigner
from scheduler.metrics import stale_writes
from scheduler.service import SchedulerService
from scheduler.settings import SchedulerSettings
from shared.contracts import (
    ANY,
    JOBS_SUBMITTED,
    JobSubmitted,
    TaskStatus,
    provider_event_subject,
    status_subject,
)
from shared.db import UnitOfWork, is_sqlite, unit_of_work
from shared.loops import ReadyChecks, every
from shared.nats import Poison, PullConsumer, Retry, correlation_of

log = structlog.get_logger(__name__)
M = TypeVar("M", bound=BaseModel)

PLACEMENT_LOCK = 0x646E7465_01
"""Advisory lock key: one replica runs a placement round at a time (PostgreSQL).

Why a lock and not only ``SKIP LOCKED``: a round decides per-GPU capacity across many rows,
so two replicas each claiming *different* queued jobs could still hand the same GPU index on
one host to both. The lock is transaction-scoped and taken first; under READ COMMITTED every
later statement of the round sees the previous round's commit, so accounting never races.
Rows are still claimed ``FOR UPDATE SKIP LOCKED`` so cancels and status updates serialise with
a round per job. A replica that misses the lock skips the round instead of waiting; intake and
status handling run on every replica in parallel.
"""

STATUS_CONSUMER = "scheduler-status"
STALE_TRIES = 3
"""A message whose job changed under it is applied again at once this often, then naked."""


class Workers:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        js: JetStreamContext,
        settings: SchedulerSettings,
        presigner: Presigner | None = None,
        ready: ReadyChecks | None = None,
        billing: HttpBilling | None = None,
        nc: NATS | None = None,
    ) -> None:
        self.sessions = sessions
        self.nc = nc  # answers daemons' start requests (scheduler/confirm.py); None: not here
        self.ready = ready  # the app's ready checks: a failing loop makes /ready answer 503
        self.js = js
        self.settings = settings
        self.presigner = presigner
        self.billing = billing
        self.wake = asyncio.Event()
        self._next_expiry = 0.0  # monotonic: when timeouts and leases are next looked at
        self.hardware = HardwareCache()
        self._write_lock = asyncio.Lock() if is_sqlite(settings.database_url) else None

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[None]:
        """On SQLite, one writing transaction of these loops at a time: SQLite has one writer,
        and a transaction that finds the file locked waits in its busy handler's sleeps
        (up to 100 ms each), which made rounds and batches queue behind each other for
        hundreds of ms. An asyncio lock hands the writer over at once. PostgreSQL: no-op."""
        if self._write_lock is None:
            yield
            return
        async with self._write_lock:
            yield

    def _service(self, uow: UnitOfWork) -> SchedulerService:
        return SchedulerService(uow, self.js, self.settings)

    @contextlib.asynccontextmanager
    async def _unit(self) -> AsyncIterator[SchedulerService]:
        """A service in one unit of work (committed at the end), holding SQLite's writer."""
        async with self._writing(), unit_of_work(self.sessions) as uow:
            yield self._service(uow)

    async def _consume(
        self, msg: Msg, model: type[M], apply: Callable[[SchedulerService, M], Awaitable[object]]
    ) -> M:
        """Validate (invalid → ``Poison``), then apply in one unit of work, committed before
        the consumer acks. Returns the message, for the caller's wake-up decision."""
        try:
            message = model.model_validate_json(msg.data)
        except ValidationError as exc:
            raise Poison(f"invalid {model.__name__}: {exc.error_count()} errors") from exc
        for _ in range(STALE_TRIES):
            try:
                async with self._writing(), unit_of_work(self.sessions) as uow:
                    await apply(self._service(uow), message)
                return message
            except StaleDataError:
                # Another unit of work moved the job after we read it (compare-and-set on
                # ``jobs.version``): nothing of ours was written; apply again on fresh state.
                stale_writes.labels("consumer").inc()
                log.info("job.changed_concurrently", message=model.__name__)
        raise Retry(f"the job kept changing concurrently ({STALE_TRIES} tries)", delay=0.5)

    async def _consume_batch(
        self,
        msgs: list[Msg],
        model: type[M],
        apply: Callable[[SchedulerService, list[tuple[M, str | None]]], Awaitable[object]],
    ) -> list[M]:
        """Several messages in one unit of work, committed before the consumer acks any of
        them. An invalid one raises, and the consumer handles the batch one by one instead
        (so the invalid one is settled alone, and the others are stored all the same)."""
        batch = [(model.model_validate_json(m.data), correlation_of(m)) for m in msgs]
        async with self._writing(), unit_of_work(self.sessions) as uow:
            await apply(self._service(uow), batch)
        return [m for m, _ in batch]

    async def on_submitted_batch(self, msgs: list[Msg]) -> None:
        """A fetched batch of submissions stored in one transaction (acked after its commit)."""
        for sub in await self._consume_batch(msgs, JobSubmitted, SchedulerService.intake_many):
            self.hardware.remember(sub.job_id, sub.spec)
        self.wake.set()

    async def on_status_batch(self, msgs: list[Msg]) -> None:
        async def apply(svc: SchedulerService, batch: list[tuple[TaskStatus, str | None]]) -> None:
            await svc.apply_status_batch([st for st, _ in batch])

        got = await self._consume_batch(msgs, TaskStatus, apply)
        if any(st.state != "running" for st in got):
            self.wake.set()

    async def on_provider_event_batch(self, msgs: list[Msg]) -> None:
        async def apply(
            svc: SchedulerService, batch: list[tuple[leases.ProviderMessage, str | None]]
        ) -> None:
            for ev, _ in batch:
                await leases.on_provider_message(svc, ev.root)

        got = await self._consume_batch(msgs, leases.ProviderMessage, apply)
        if any(leases.frees_capacity(ev.root) for ev in got):
            self.wake.set()

    async def on_submitted(self, msg: Msg) -> None:
        cid = correlation_of(msg)
        await self._consume(msg, JobSubmitted, lambda svc, sub: svc.intake(sub, cid))
        self.wake.set()

    async def on_submission_exhausted(self, msg: Msg, exc: Exception) -> bool:
        """Intake failed ``max_deliver`` times: store the job as failed with the reason. If the
        database is still away this fails too and the submission goes to the dead letters,
        replayed later (shared/nats.py), so it is never lost."""
        sub = JobSubmitted.model_validate_json(msg.data)
        try:  # the database may be back this very moment: a stored job beats a failed one
            await self.on_submitted(msg)
            return True
        except Exception as again:
            exc = again
        async with self._writing(), unit_of_work(self.sessions) as uow:
            await self._service(uow).intake_failed(sub, str(exc) or type(exc).__name__)
        return True

    async def on_status(self, msg: Msg) -> None:
        st = await self._consume(msg, TaskStatus, SchedulerService.apply_status)
        if st.state != "running":
            self.wake.set()  # capacity was freed

    async def on_provider_event(self, msg: Msg) -> None:
        ev = await self._consume(
            msg, leases.ProviderMessage, lambda svc, m: leases.on_provider_message(svc, m.root)
        )
        if leases.frees_capacity(ev.root):
            self.wake.set()

    async def place_once(self) -> int:
        async with (
            self._writing(),
            metrics.timed_round() as round_,
            unit_of_work(self.sessions) as uow,
        ):
            if not is_sqlite(self.settings.database_url):
                import sqlalchemy as sa

                got = await uow.session.execute(
                    sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": PLACEMENT_LOCK}
                )
                if not got.scalar_one():
                    round_.skip()
                    return 0
            service = self._service(uow)
            pending = await self._reports_pending()
            await service.expire_dispatches(self.settings.placement_batch, reports_pending=pending)
            if time.monotonic() >= self._next_expiry:
                # each scans the running jobs: once per interval, not once per burst round
                self._next_expiry = time.monotonic() + self.settings.placement_interval_seconds
                await leases.expire_timeouts(service, self.settings.placement_batch, pending)
                await leases.expire_leases(service, self.settings.placement_batch)
            placer = Placer(service, self.presigner, self.billing, self.hardware)
            return await placer.place(self.settings.placement_batch)

    async def _reports_pending(self) -> bool:
        """Are status reports waiting in JetStream (a "running" may be among them)?"""
        try:
            info = await self.js.consumer_info("STATUS", STATUS_CONSUMER)
        except Exception:
            return True  # cannot tell: be lenient with deadlines
        return bool(info.num_pending or info.num_ack_pending)

    async def placement_loop(self, stop: asyncio.Event) -> None:
        """Place on a hint (new job, freed capacity) or every interval, with jitter.

        A hint is followed by a short pause (``placement_coalesce_seconds``) so a burst of
        submissions is placed in one round instead of one round each: a round's fixed cost
        (reading every live provider) dominates when it places a single job. A full batch
        means more is waiting, so the next round starts at once.
        """

        async def place() -> float | None:
            try:
                placed = await self.place_once()
            except StaleDataError:
                # a job placed this round changed meanwhile: the round was rolled back whole
                stale_writes.labels("placement").inc()
                return 0.0
            return 0.0 if placed >= self.settings.placement_batch else None

        await every(
            "placement",
            place,
            self.settings.placement_interval_seconds,
            stop=stop,
            ready=self.ready,
            wake=self.wake,
            settle=self.settings.placement_coalesce_seconds,
        )

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        # Every accepted message is kept (issue 18): failures back off exponentially, and past
        # the bound a message is settled (a job stored as failed) or dead-lettered and replayed.
        consumer = functools.partial(
            PullConsumer,
            self.js,
            ack_wait=s.ack_wait_seconds,
            ready=self.ready,
            dead_letters=True,
            max_deliver=s.max_deliver,
            backoff_cap=s.retry_backoff_cap_seconds,
            replay_after=s.dead_letter_replay_seconds,
        )
        consumers = [
            consumer(
                "JOBS",
                "scheduler-intake",
                JOBS_SUBMITTED,
                self.on_submitted,
                on_exhausted=self.on_submission_exhausted,
                batch=s.consume_batch,
                batch_handler=self.on_submitted_batch,
            ),
            consumer(
                "STATUS",
                STATUS_CONSUMER,
                status_subject(ANY),
                self.on_status,
                batch=s.consume_batch,
                batch_handler=self.on_status_batch,
            ),
            consumer(
                "EVENTS",
                "scheduler-providers",
                provider_event_subject(ANY),
                self.on_provider_event,
                batch=s.consume_batch,
                batch_handler=self.on_provider_event_batch,
            ),
        ]
        async with asyncio.TaskGroup() as tg:
            for c in consumers:
                tg.create_task(c.run(stop))
            tg.create_task(self.placement_loop(stop))
            tg.create_task(metrics.poll_forever(self.sessions, self.js, stop))
            tg.create_task(outbox_loop(self.sessions, self.js, stop))
            if self.nc is not None:
                tg.create_task(confirm.serve(self.nc, self._unit, stop))
