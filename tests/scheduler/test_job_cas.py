"""Compare-and-set on a job's state (``jobs.version``): two units of work that read the same
``dispatched`` job cannot both move it. The soak caught the status consumer (→ running) and the
provider-offline requeue doing so within 3 ms on SQLite, where ``FOR UPDATE`` locks nothing,
leaving ``running, attempt 2, provider NULL`` for ever. Here the same interleaving is forced
on both dialects: the later write is refused and the message applied again on fresh state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from nats.aio.msg import Msg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from scheduler.main import MIGRATIONS
from scheduler.metrics import stale_writes
from scheduler.models import Job, JobEvent, ProviderView
from scheduler.service import SchedulerService
from scheduler.settings import SchedulerSettings
from scheduler.workers import Workers
from shared.contracts import JobState, ProviderEvent, TaskStatus
from shared.db import make_engine, run_migrations, unit_of_work, utcnow
from shared.nats import close_nats, connect, ensure_streams

PROVIDER = "prov-cas"


@pytest.fixture
async def world(db_url: str, own_nats: str) -> AsyncIterator[dict[str, Any]]:
    """The scheduler's migrated database with one job dispatched to PROVIDER, and JetStream."""
    await run_migrations(MIGRATIONS, db_url, "alembic_version_scheduler")
    engine = make_engine(db_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    nc = await connect(own_nats, "test-cas")
    js = nc.jetstream()
    await ensure_streams(js)
    now = utcnow()
    async with unit_of_work(sessions) as uow:
        uow.session.add(ProviderView(id=PROVIDER, status="online", last_seen_at=now))
        uow.session.add(
            Job(
                id="job-cas",
                owner_id="owner-cas",
                type="script",
                name="cas",
                state=JobState.DISPATCHED,
                attempt=1,
                max_retries=3,
                spec={"type": "script", "params": {"script_content": "echo"}},
                provider_id=PROVIDER,
                dispatched_at=now,
                start_deadline=now + timedelta(minutes=5),
            )
        )
    settings = SchedulerSettings(database_url=db_url, nats_url=own_nats, port=0)
    try:
        yield {"sessions": sessions, "js": js, "settings": settings, "at": now}
    finally:
        await close_nats(nc)
        await engine.dispose()


async def _job(sessions: async_sessionmaker[AsyncSession]) -> Job:
    async with sessions() as s:
        job = await s.get(Job, "job-cas")
        assert job is not None
        return job


async def test_a_stale_requeue_is_refused_not_half_applied(world: dict[str, Any]) -> None:
    sessions, js, settings = world["sessions"], world["js"], world["settings"]
    running = TaskStatus(
        job_id="job-cas", attempt=1, provider_id=PROVIDER, state=JobState.RUNNING, at=utcnow()
    )
    with pytest.raises(StaleDataError):
        async with unit_of_work(sessions) as offline_uow:
            offline = SchedulerService(offline_uow, js, settings)
            stale = await offline.jobs.get("job-cas")  # the requeue reads "dispatched" ...
            assert stale is not None and stale.state == JobState.DISPATCHED
            async with unit_of_work(sessions) as status_uow:  # ... the status consumer commits
                await SchedulerService(status_uow, js, settings).apply_status(running)
            await offline._requeue_or_fail(stale, "provider offline", cancel_old=True)
    job = await _job(sessions)
    # Before the version column this read running, attempt 2, provider NULL: stuck for ever.
    assert (job.state, job.attempt, job.provider_id) == ("running", 1, PROVIDER)
    assert job.version == 2


async def test_the_refused_message_is_applied_again_on_fresh_state(
    world: dict[str, Any],
) -> None:
    sessions, js, settings = world["sessions"], world["js"], world["settings"]
    workers = Workers(sessions, js, settings)
    running = TaskStatus(
        job_id="job-cas", attempt=1, provider_id=PROVIDER, state=JobState.RUNNING, at=utcnow()
    )
    offline = ProviderEvent(kind="offline", provider_id=PROVIDER, status="offline", at=utcnow())
    data = offline.model_dump_json().encode()
    msg = Msg(_client=None, subject="providers.events.offline", data=data)  # type: ignore[arg-type]
    applied: list[str] = []
    before = stale_writes.labels("consumer")._value.get()

    async def interleaved(svc: SchedulerService, ev: ProviderEvent) -> None:
        job = await svc.jobs.get("job-cas")  # this unit of work has read the job ...
        assert job is not None
        applied.append(job.state)
        if len(applied) == 1:  # ... when the "running" report is committed by another
            async with unit_of_work(sessions) as uow:
                await SchedulerService(uow, js, settings).apply_status(running)
            # what the offline handler then writes, from the state it read
            await svc._requeue_or_fail(job, f"provider {PROVIDER} offline", cancel_old=True)
            return
        await svc.on_provider_event(ev)

    await workers._consume(msg, ProviderEvent, interleaved)
    # The first try wrote nothing, the second read "running" and requeued from there.
    assert applied == ["dispatched", "running"]
    assert stale_writes.labels("consumer")._value.get() == before + 1
    job = await _job(sessions)
    assert (job.state, job.attempt, job.provider_id) == ("queued", 2, None)
    async with sessions() as s:
        rows = (
            await s.execute(
                sa.select(JobEvent.from_state, JobEvent.to_state, JobEvent.attempt)
                .where(JobEvent.job_id == "job-cas")
                .order_by(JobEvent.id)
            )
        ).all()
        view = await s.get(ProviderView, PROVIDER)
    assert [tuple(r) for r in rows] == [("dispatched", "running", 1), ("running", "queued", 1)]
    assert view is not None and view.status == "offline"
