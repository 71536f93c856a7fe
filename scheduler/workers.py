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

from scheduler.dispatch import Placer, Presigner
from scheduler.service import SchedulerService
from scheduler.settings import SchedulerSettings
from shared.contracts import JobSubmitted, ProviderEvent, TaskStatus
from shared.db import is_sqlite, unit_of_work
from shared.nats import Poison, PullConsumer, correlation_of

log = structlog.get_logger(__name__)

PLACEMENT_LOCK = 0x646E7465_01
"""Advisory lock key: one replica places at a time, so GPU accounting never races."""


class Workers:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        js: JetStreamContext,
        settings: SchedulerSettings,
        presigner: Presigner | None = None,
    ) -> None:
        self.sessions = sessions
        self.js = js
        self.settings = settings
        self.presigner = presigner
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
            await service.expire_dispatches(self.settings.placement_batch)
            return await Placer(service, self.presigner).place(self.settings.placement_batch)

    async def placement_loop(self, stop: asyncio.Event) -> None:
        """Place on a hint (new job, freed capacity) or every interval, with jitter."""
        while not stop.is_set():
            self.wake.clear()
            try:
                await self.place_once()
            except Exception as exc:
                log.warning("placement.failed", error=str(exc))
            delay = self.settings.placement_interval_seconds * random.uniform(0.8, 1.2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)

    async def run(self, stop: asyncio.Event) -> None:
        consumers = [
            PullConsumer(self.js, "JOBS", "scheduler-intake", "jobs.submitted", self.on_submitted),
            PullConsumer(self.js, "STATUS", "scheduler-status", "jobs.status.*", self.on_status),
            PullConsumer(
                self.js,
                "EVENTS",
                "scheduler-providers",
                "providers.events.*",
                self.on_provider_event,
            ),
        ]
        async with asyncio.TaskGroup() as tg:
            for c in consumers:
                tg.create_task(c.run(stop))
            tg.create_task(self.placement_loop(stop))
