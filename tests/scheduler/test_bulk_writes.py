"""The bulk paths write the rows the one-by-one paths write (issue 12).

A placement round and a batch of status reports write their jobs as executemany UPDATEs and
their events as one INSERT (``JobRepository.stage`` / ``write_staged``); a report handled
alone goes through the ORM. The same jobs, reports and clock through both must leave the
same rows in every table a transition touches: jobs, events, usage, the billing outbox and
the fair-share accounts. And a staged job that changed under the round is refused (SQLite,
where ``FOR UPDATE`` locks nothing), as the ORM's compare-and-set refuses it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from scheduler import billing, dispatch, service
from scheduler.dispatch import Placer
from scheduler.main import MIGRATIONS
from scheduler.models import (
    AttemptUsage,
    Job,
    JobEvent,
    OwnerUsage,
    ProviderView,
    SchedulerBase,
    UsageOutbox,
    UsageRecord,
)
from scheduler.repository import JobRepository
from scheduler.service import SchedulerService
from scheduler.settings import SchedulerSettings
from shared.contracts import JobState, JobSubmitted, TaskStatus, log_key
from shared.db import UnitOfWork, make_engine, run_migrations, unit_of_work
from shared.nats import close_nats, connect, ensure_streams

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
GPUS = [{"index": i, "name": "NVIDIA H100 80GB", "memory_total_mb": 81920} for i in range(8)]


class Clock:
    """One fixed ``utcnow`` for the scheduler's modules, moved on by hand between steps."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def world(
    db_url: str, own_nats: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[dict[str, Any]]:
    await run_migrations(MIGRATIONS, db_url, "alembic_version_scheduler")
    engine = make_engine(db_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    nc = await connect(own_nats, "test-bulk")
    js = nc.jetstream()
    await ensure_streams(js)
    clock = Clock()
    for module in (service, dispatch, billing):
        monkeypatch.setattr(module, "utcnow", clock)
    settings = SchedulerSettings(database_url=db_url, nats_url=own_nats, port=0)
    try:
        yield {"sessions": sessions, "js": js, "settings": settings, "clock": clock}
    finally:
        await close_nats(nc)
        await engine.dispose()


def _submission(prefix: str, n: int, gpus: int, max_retries: int) -> JobSubmitted:
    spec: dict[str, Any] = {
        "resources": {"gpu_count": gpus},
        "params": {"script_content": "true"},
        "tags": ["tagged", f"n{n}"],
        "max_retries": max_retries,
    }
    return JobSubmitted.model_validate(
        {
            "job_id": f"{prefix}-{n}",
            "owner_id": f"{prefix}-owner",
            "type": "script",
            "name": f"job {n}",
            "spec": spec,
            "submitted_at": T0,
        }
    )


async def _scenario(w: dict[str, Any], prefix: str, *, batched: bool) -> None:
    """Three jobs submitted and placed on the prefix's own host, reported running, then one
    completed, one failed, one returned with no retries left. Bulk: the round as it runs,
    reports in one batch each. The reference: the ORM writes everything (nothing staged, no
    events collected), each report in its own unit of work as a lone message is applied."""
    with pytest.MonkeyPatch.context() as mp:
        if not batched:
            mp.setattr(JobRepository, "stage", lambda self, job: None)
            mp.setattr(JobRepository, "collect_events", lambda self: None)
        await _steps(w, prefix, batched=batched)


async def _steps(w: dict[str, Any], prefix: str, *, batched: bool) -> None:
    sessions, clock = w["sessions"], w["clock"]
    host = f"{prefix}-host"
    clock.now = T0

    def svc(uow: Any) -> SchedulerService:
        return SchedulerService(uow, w["js"], w["settings"])

    async with unit_of_work(sessions) as uow:
        uow.session.add(
            ProviderView(
                id=host, status="online", last_seen_at=T0, gpus=GPUS, max_concurrent_tasks=8
            )
        )
        # the owner has run before: no query (nor autoflush) finds its account mid-batch
        uow.session.add(OwnerUsage(owner_id=f"{prefix}-owner", decayed_gpu_seconds=0, as_of=T0))
        subs = [_submission(prefix, 0, 1, 3), _submission(prefix, 1, 2, 3)]
        await svc(uow).intake_many([(s, "cid") for s in [*subs, _submission(prefix, 2, 1, 0)]])
    clock.now += timedelta(seconds=1)
    async with unit_of_work(sessions) as uow:  # the other prefix's host is taken, not live
        await uow.session.execute(
            sa.update(ProviderView).where(ProviderView.id != host).values(status="offline")
        )
        assert await Placer(svc(uow)).place() == 3

    def report(n: int, state: JobState, **kw: Any) -> TaskStatus:
        return TaskStatus(
            job_id=f"{prefix}-{n}", attempt=1, provider_id=host, state=state, at=clock.now, **kw
        )

    running = [report(n, JobState.RUNNING) for n in range(3)]
    ending = [
        report(0, JobState.COMPLETED, exit_code=0, artifacts=[log_key(f"{prefix}-0", 1), "x"]),
        report(1, JobState.FAILED, exit_code=3, error="boom"),
        report(2, JobState.QUEUED, error="returned"),
    ]
    for step, reports in ((2, running), (3, ending)):
        clock.now = T0 + timedelta(seconds=step * 10)
        if batched:
            async with unit_of_work(sessions) as uow:
                await svc(uow).apply_status_batch(reports)
        else:
            for st in reports:
                async with unit_of_work(sessions) as uow:
                    await svc(uow).apply_status(st)


def _plain(value: Any, prefix: str) -> Any:
    """A value with the scenario's prefix taken out (ids, keys, JSON payloads)."""
    if isinstance(value, str):
        return value.replace(prefix, "P")
    if isinstance(value, dict):
        return {_plain(k, prefix): _plain(v, prefix) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, prefix) for v in value]
    return value


async def _rows(sessions: async_sessionmaker[AsyncSession], prefix: str) -> dict[str, list]:
    """Every row the scenario wrote, without surrogate ids, in write order."""
    tables: list[tuple[type[SchedulerBase], Any, Any]] = [
        (Job, Job.id.startswith(prefix), Job.id),
        (JobEvent, JobEvent.job_id.startswith(prefix), JobEvent.id),
        (UsageRecord, UsageRecord.job_id.startswith(prefix), UsageRecord.id),
        (UsageOutbox, UsageOutbox.job_id.startswith(prefix), UsageOutbox.id),
        (AttemptUsage, AttemptUsage.job_id.startswith(prefix), AttemptUsage.id),
        (OwnerUsage, OwnerUsage.owner_id.startswith(prefix), OwnerUsage.owner_id),
    ]
    out: dict[str, list] = {}
    async with sessions() as s:
        for model, where, order in tables:
            table = model.__table__
            got = (await s.execute(sa.select(table).where(where).order_by(order))).mappings()
            out[model.__tablename__] = [
                {k: _plain(v, prefix) for k, v in row.items() if k != "id" or model is Job}
                for row in got
            ]
    return out


async def test_batches_and_rounds_write_the_rows_single_reports_write(
    world: dict[str, Any],
) -> None:
    await _scenario(world, "one", batched=False)
    await _scenario(world, "bulk", batched=True)
    alone, bulk = await _rows(world["sessions"], "one"), await _rows(world["sessions"], "bulk")

    assert bulk == alone
    states = {r["id"]: (r["state"], r["attempt"], r["version"]) for r in bulk["jobs"]}
    assert states == {
        "P-0": ("completed", 1, 4),  # intake 1, placed 2, running 3, completed 4
        "P-1": ("failed", 1, 4),
        "P-2": ("failed", 1, 4),  # returned with no retries left
    }
    assert [
        (e["to_state"], e["cause"][:9]) for e in bulk["job_events"] if e["job_id"] == "P-0"
    ] == [
        ("queued", "submitted"),
        ("dispatched", "placed on"),
        ("running", "reported "),
        ("completed", "reported "),
    ]
    assert {r["job_id"] for r in bulk["usage_records"]} == {"P-0", "P-1", "P-2"}
    assert len(bulk["usage_outbox"]) == len(bulk["attempt_usage"]) == 3
    assert bulk["owner_usage"][0]["decayed_gpu_seconds"] > 0
    [done] = [r for r in bulk["jobs"] if r["id"] == "P-0"]
    assert done["artifacts"] == [{"key": log_key("P-0", 1), "kind": "log"}]  # "x" was no output


async def test_a_staged_job_that_moved_meanwhile_is_not_overwritten(
    world: dict[str, Any],
) -> None:
    """Compare-and-set as the ORM does it: the stale write changes nothing, and where the
    driver counts an executemany's rows (SQLite: ``FOR UPDATE`` locks nothing there) it fails
    the unit of work. On PostgreSQL a round only stages rows it holds ``FOR UPDATE``."""
    sessions = world["sessions"]
    async with unit_of_work(sessions) as uow:
        await SchedulerService(uow, world["js"], world["settings"]).intake_many(
            [(_submission("cas", 0, 1, 3), None)]
        )
    async with sessions() as reader:
        job = await reader.get(Job, "cas-0")
        assert job is not None
        async with unit_of_work(sessions) as other:  # a concurrent writer moves the job first
            await other.session.execute(
                sa.update(Job).where(Job.id == "cas-0").values(wait_reason="theirs", version=2)
            )
        job.wait_reason = "ours"
        svc = SchedulerService(UnitOfWork(reader), world["js"], world["settings"])
        svc.jobs.stage(job)
        if reader.get_bind().dialect.supports_sane_multi_rowcount:
            with pytest.raises(StaleDataError):
                await svc.jobs.write_staged()
        else:
            await svc.jobs.write_staged()
        await reader.commit()
    async with sessions() as s:
        row = (await s.execute(sa.select(Job.wait_reason, Job.version))).one()
    assert tuple(row) == ("theirs", 2)


async def test_the_active_rows_a_round_keeps_are_the_rows_it_would_read(
    world: dict[str, Any],
) -> None:
    """``dispatch.ActiveRows``: a round's active attempts kept between rounds by the job's
    version are, at every step, what ``JobRepository.active`` reads anew: placed jobs come
    in, a start (its ``started_at``) is seen, and ended or requeued ones leave."""
    sessions, clock, kept = world["sessions"], world["clock"], dispatch.ActiveRows()
    host = "act-host"

    def svc(uow: Any) -> SchedulerService:
        return SchedulerService(uow, world["js"], world["settings"])

    async def both() -> tuple[list[Any], list[Any]]:
        async with sessions() as s:
            repo = JobRepository(s)
            return sorted(map(tuple, await kept.read(repo))), sorted(
                map(tuple, await repo.active())
            )

    async with unit_of_work(sessions) as uow:
        uow.session.add(
            ProviderView(
                id=host, status="online", last_seen_at=T0, gpus=GPUS, max_concurrent_tasks=8
            )
        )
        await svc(uow).intake_many([(_submission("act", n, 1, 0), None) for n in range(3)])
        await uow.session.execute(
            sa.update(ProviderView).where(ProviderView.id != host).values(status="offline")
        )
    assert await both() == ([], [])
    async with unit_of_work(sessions) as uow:
        assert await Placer(svc(uow)).place() == 3
    ours, fresh = await both()
    assert ours == fresh and len(fresh) == 3 and all(r[7] is None for r in fresh)  # started_at

    def report(n: int, state: JobState) -> TaskStatus:
        return TaskStatus(job_id=f"act-{n}", attempt=1, provider_id=host, state=state, at=T0)

    clock.now = T0 + timedelta(seconds=10)
    async with unit_of_work(sessions) as uow:
        await svc(uow).apply_status_batch([report(n, JobState.RUNNING) for n in range(3)])
    ours, fresh = await both()
    assert ours == fresh and all(r[7] is not None for r in fresh)  # each start is seen
    clock.now = T0 + timedelta(seconds=20)
    async with unit_of_work(sessions) as uow:
        await svc(uow).apply_status_batch(
            [report(0, JobState.COMPLETED), report(1, JobState.QUEUED)]
        )
    ours, fresh = await both()
    assert ours == fresh and [r[0] for r in fresh] == ["act-2"]  # the others left
