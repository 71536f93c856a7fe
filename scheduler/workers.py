"""The scheduler's long-running loops: three JetStream consumers and the placement loop."""

from __future__ import annotations

import asyncio
import contextlib
import random

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scheduler.billing import HttpBilling, outbox_loop
from scheduler.dispatch import Placer, Presigner
from scheduler.service import SchedulerService
from scheduler.settings import SchedulerSettings
from shared.contracts import JobSubmitted, ProviderEvent, TaskStatus
from shared.db import is_sqlite, unit_of_work
from shared.nats import Poison, PullConsumer, correlation_of

log = structlog.get_logger(__name__)

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


class Workers:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        js: JetStreamContext,
        settings: SchedulerSettings,
        presigner: Presigner | None = None,
        billing: HttpBilling | None = None,
    ) -> None:
        self.sessions = sessions
        self.js = js
        self.settings = settings
        self.presigner = presigner
        self.billing = billing
        self.wake = asyncio.Event()

    def _service(self, uow: object) -> SchedulerService:
        return SchedulerService(uow, self.js, self.settings)  # type: ignore[arg-type]

    async def on_submitted(self, msg: Msg) -> None:
        try:
            sub = JobSubmitted.model_validate_json(msg.data)
        except ValidationError as exc:
            raise Poison(f"invalid submission: {exc.error_count()} errors") from exc
        async with unit_of_work(self.sessions) as uow:
            await self._service(uow).intake(sub, correlation_of(msg))
        self.wake.set()  # persisted (committed above) before the consumer acks

    async def on_status(self, msg: Msg) -> None:
        try:
            st = TaskStatus.model_validate_json(msg.data)
        except ValidationError as exc:
            raise Poison(f"invalid status: {exc.error_count()} errors") from exc
        async with unit_of_work(self.sessions) as uow:
            await self._service(uow).apply_status(st)
        if st.state != "running":
            self.wake.set()  # capacity was freed

    async def on_provider_event(self, msg: Msg) -> None:
        try:
            ev = ProviderEvent.model_validate_json(msg.data)
        except ValidationError as exc:
            raise Poison(f"invalid provider event: {exc.error_count()} errors") from exc
        async with unit_of_work(self.sessions) as uow:
            await self._service(uow).on_provider_event(ev)
        if ev.kind != "heartbeat":
            self.wake.set()

    async def place_once(self) -> int:
        async with unit_of_work(self.sessions) as uow:
            if not is_sqlite(self.settings.database_url):
                import sqlalchemy as sa

                got = await uow.session.execute(
                    sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": PLACEMENT_LOCK}
                )
                if not got.scalar_one():
                    return 0
            service = self._service(uow)
            pending = await self._reports_pending()
            await service.expire_dispatches(self.settings.placement_batch, reports_pending=pending)
            placer = Placer(service, self.presigner, self.billing)
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
        while not stop.is_set():
            self.wake.clear()
            placed = 0
            try:
                placed = await self.place_once()
            except Exception as exc:
                log.warning("placement.failed", error=str(exc))
            if placed >= self.settings.placement_batch:
                continue
            delay = self.settings.placement_interval_seconds * random.uniform(0.8, 1.2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)
                await asyncio.sleep(self.settings.placement_coalesce_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        wait = self.settings.ack_wait_seconds
        consumers = [
            PullConsumer(
                self.js,
                "JOBS",
                "scheduler-intake",
                "jobs.submitted",
                self.on_submitted,
                ack_wait=wait,
            ),
            PullConsumer(
                self.js, "STATUS", STATUS_CONSUMER, "jobs.status.*", self.on_status, ack_wait=wait
            ),
            PullConsumer(
                self.js,
                "EVENTS",
                "scheduler-providers",
                "providers.events.*",
                self.on_provider_event,
                ack_wait=wait,
            ),
        ]
        async with asyncio.TaskGroup() as tg:
            for c in consumers:
                tg.create_task(c.run(stop))
            tg.create_task(self.placement_loop(stop))
            tg.create_task(outbox_loop(self.sessions, self.js, stop))
