from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError

from scheduler.models import AttemptUsage, Job, JobEvent, JobTag, ProviderView, UsageRecord
from shared.contracts import JobState

ACTIVE = (JobState.DISPATCHED, JobState.RUNNING)
# the tables themselves, for Core bulk statements (issue 12)
JOBS = cast(sa.Table, Job.__table__)
JOB_TAGS = cast(sa.Table, JobTag.__table__)
JOB_EVENTS = cast(sa.Table, JobEvent.__table__)
USAGE_RECORDS = cast(sa.Table, UsageRecord.__table__)
ATTEMPT_USAGE = cast(sa.Table, AttemptUsage.__table__)
# a Job attribute's column ("requested_gpu_model" is column "gpu_model")
COLUMN_OF = {a.key: a.columns[0].key for a in sa.inspect(Job).column_attrs}
ALL_KEYS = frozenset(COLUMN_OF)
# a usage record's attribute -> column ("gpu_name" is column "gpu_model"); its id is generated
USAGE_COLUMN_OF = {
    a.key: a.columns[0].key for a in sa.inspect(UsageRecord).column_attrs if a.key != "id"
}


_STAGED_UPDATE = (
    sa.update(JOBS)
    .where(JOBS.c.id == sa.bindparam("b_id"), JOBS.c.version == sa.bindparam("b_version"))
    .values(version=JOBS.c.version + 1)
)


UNREAD_WHILE_QUEUED = (Job.spec, Job.tags, Job.gpu_indices, Job.artifacts, Job.gang)
"""A queued job's JSON columns: placement sets the placement ones, never reads them."""


class JobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._staged: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        self._events: list[dict[str, Any]] | None = None
        self._rows: dict[sa.Table, list[dict[str, Any]]] = {}

    def stage(self, job: Job) -> None:
        """Take a job this transaction changed out of the ORM's unit of work and keep its
        changed columns for :meth:`write_staged`: a round's placements or a status batch are
        written as one executemany UPDATE per set of changed columns instead of an ORM flush
        of each (on PostgreSQL a versioned ORM UPDATE is one round trip per job, as asyncpg
        gives an executemany no rowcount to check versions with; issue 12). Only for a job
        read ``FOR UPDATE`` in this transaction (see :meth:`write_staged`). An unchanged job
        is left alone; the object stays usable, detached."""
        state = sa.inspect(job)
        changed = ALL_KEYS.intersection(state.committed_state)  # what was set since loaded
        if not changed or "version" in changed:
            return
        keys = tuple(sorted(changed))
        row = {COLUMN_OF[k]: getattr(job, k) for k in keys}
        row["b_id"], row["b_version"] = job.id, job.version
        self._staged.setdefault(keys, []).append(row)
        self.session.expunge(job)

    async def write_staged(self) -> None:
        """Write the collected events, then the staged jobs, compare-and-set on ``version``
        as the ORM would. Where the
        driver counts an executemany's rows (SQLite) a job that moved meanwhile fails the
        unit of work with ``StaleDataError``, as an ORM flush does; on PostgreSQL every
        staged row was read ``FOR UPDATE`` in this transaction, so none can have moved."""
        staged, self._staged = self._staged, {}
        events, self._events = self._events, None
        collected, self._rows = self._rows, {}
        if events:
            await self.session.execute(sa.insert(JOB_EVENTS), events)
        for table, inserted in collected.items():
            await self.session.execute(sa.insert(table), inserted)
        counted = self.session.get_bind().dialect.supports_sane_multi_rowcount
        for rows in staged.values():
            got = cast(sa.CursorResult[Any], await self.session.execute(_STAGED_UPDATE, rows))
            if counted and got.rowcount != len(rows):
                moved = len(rows) - got.rowcount
                raise StaleDataError(f"{moved} of {len(rows)} staged jobs changed meanwhile")

    async def get(self, job_id: str, *, for_update: bool = False) -> Job | None:
        stmt = sa.select(Job).where(Job.id == job_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def add(self, job: Job) -> None:
        self.session.add(job)
        await self.session.flush()

    async def existing_ids(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs are stored already (one query)."""
        if not job_ids:
            return set()
        stmt = sa.select(Job.id).where(Job.id.in_(job_ids))
        return set((await self.session.execute(stmt)).scalars())

    async def lock_many(self, job_ids: list[str], *, without_spec: bool = False) -> dict[str, Job]:
        """These jobs, read ``FOR UPDATE`` in id order (one query; the order avoids deadlocks
        between replicas locking overlapping batches). ``without_spec``: the spec column is
        not read (a batch of status reports needs few of them: :meth:`load_specs` reads those;
        decoding every job's spec was the batch's largest JSON cost, scripts of up to 256 KiB
        among them)."""
        if not job_ids:
            return {}
        stmt = (
            sa.select(Job)
            .where(Job.id.in_(sorted(set(job_ids))))
            .order_by(Job.id)
            .with_for_update()
        )
        if without_spec:
            stmt = stmt.options(sa.orm.defer(Job.spec, raiseload=True))
        return {j.id: j for j in (await self.session.execute(stmt)).scalars()}

    async def insert_submitted(
        self, jobs: list[dict[str, Any]], tags: list[dict[str, Any]], events: list[dict[str, Any]]
    ) -> None:
        """New jobs with their tags and first events, as three Core executemany INSERTs (rows
        keyed by column name; no ORM objects to build, track and flush)."""
        if not jobs:
            return
        await self.session.execute(sa.insert(JOBS), jobs)
        if tags:
            await self.session.execute(sa.insert(JOB_TAGS), tags)
        await self.session.execute(sa.insert(JOB_EVENTS), events)

    async def add_event(
        self,
        job_id: str,
        at: datetime,
        from_state: str | None,
        to_state: str,
        attempt: int,
        cause: str,
    ) -> None:
        """A job event: an ORM object, or a row for one bulk INSERT while collecting."""
        row = {
            "job_id": job_id,
            "at": at,
            "from_state": from_state,
            "to_state": to_state,
            "attempt": attempt,
            "cause": cause[:255],
        }
        if self._events is not None:
            self._events.append(row)
        else:
            self.session.add(JobEvent(**row))

    def collect_row(self, table: sa.Table, row: dict[str, Any]) -> bool:
        """While collecting (:meth:`collect_events`): keep a row of ``table`` (keys are column
        names) for one executemany INSERT in :meth:`write_staged`, instead of an ORM object
        flushed with its id read back (a status batch ends ~100 attempts, each with a usage
        record and an attempt-usage row; issue 12). False when not collecting: the caller
        adds its ORM object as before."""
        if self._events is None:
            return False
        self._rows.setdefault(table, []).append(row)
        return True

    def collect_events(self) -> None:
        """From now until :meth:`write_staged`, events are rows for one Core executemany
        INSERT (a placement round's or a status batch's, in the order they happened) instead
        of ORM objects flushed one by one with their ids read back."""
        if self._events is None:
            self._events = []

    async def events(self, job_id: str) -> Sequence[JobEvent]:
        stmt = sa.select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
        return (await self.session.execute(stmt)).scalars().all()

    async def queued(self, limit: int) -> list[Job]:
        """Queued jobs in placement order, locked; other replicas skip what we hold. Their
        JSON columns are not read (a job waiting through many rounds would be decoded each
        round, scripts of up to 256 KiB among them): placement keeps the validated specs it
        needs, :meth:`load_specs` reads the others, and a queued job's placement is empty."""
        stmt = (
            sa.select(Job)
            .options(*(sa.orm.defer(c, raiseload=True) for c in UNREAD_WHILE_QUEUED))
            .where(Job.state == JobState.QUEUED)
            .order_by(Job.priority.desc(), Job.created_at, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def load_specs(self, jobs: list[Job]) -> None:
        """Read the specs :meth:`queued` left out of these jobs (one query)."""
        if not jobs:
            return
        by_id = {j.id: j for j in jobs}
        stmt = sa.select(Job.id, Job.spec).where(Job.id.in_(list(by_id)))
        for job_id, spec in await self.session.execute(stmt):
            set_committed_value(by_id[job_id], "spec", spec)

    async def dispatch_expired(self, now: datetime, limit: int) -> list[Job]:
        """Dispatched attempts past their start deadline, locked; other replicas skip them."""
        stmt = (
            sa.select(Job)
            .where(Job.state == JobState.DISPATCHED, Job.start_deadline < now)
            .order_by(Job.start_deadline)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def running_past(
        self, column: sa.orm.InstrumentedAttribute[datetime | None], now: datetime, limit: int
    ) -> list[Job]:
        """Running attempts whose ``column`` (lease or run deadline) is before ``now``, locked;
        other replicas skip them."""
        stmt = (
            sa.select(Job)
            .where(Job.state == JobState.RUNNING, column < now)
            .order_by(column)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def lease_lapsed(self, limit: int) -> list[Job]:
        """Running attempts whose provider listed what it holds after their lease ran out (so
        none of those listings confirmed them), locked; other replicas skip them."""
        stmt = (
            sa.select(Job)
            .join(ProviderView, ProviderView.id == Job.provider_id)
            .where(
                Job.state == JobState.RUNNING,
                Job.lease_expires_at < ProviderView.attempts_seen_at,
            )
            .order_by(Job.lease_expires_at)
            .limit(limit)
            .with_for_update(of=Job, skip_locked=True)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def many(self, job_ids: list[str]) -> list[Job]:
        if not job_ids:
            return []
        return list(
            (await self.session.execute(sa.select(Job).where(Job.id.in_(job_ids)))).scalars()
        )

    async def active(self, ids: list[str] | None = None) -> Sequence[Any]:
        """Every active attempt (or these of them), as rows: what a placement round accounts
        as taken (GPUs, task slots, CPUs, memory) and what its policies weigh (usage in
        flight, quotas, preemption victims), read once per round (with 8,000 running jobs,
        three reads of them were ~7 % of a burst's CPU; issue 12). ``version`` says which
        write of the job the row is (``dispatch.ActiveRows`` keeps rows by it)."""
        stmt = sa.select(
            Job.id,
            Job.version,
            Job.owner_id,
            Job.priority,
            Job.provider_id,
            Job.gpu_indices,
            Job.gpu_count,
            Job.started_at,
            Job.cpu,
            Job.memory_mb,
        ).where(Job.state.in_(ACTIVE))
        if ids is not None:
            stmt = stmt.where(Job.id.in_(ids))
        return (await self.session.execute(stmt)).all()

    async def active_versions(self) -> Sequence[Any]:
        """Every active attempt's ``(id, version)``: two plain columns, no JSON or dates to
        decode (a round reads the full rows only of those whose version moved)."""
        stmt = sa.select(Job.id, Job.version).where(Job.state.in_(ACTIVE))
        return (await self.session.execute(stmt)).all()

    async def active_on(self, provider_id: str) -> list[Job]:
        stmt = (
            sa.select(Job)
            .where(Job.provider_id == provider_id, Job.state.in_(ACTIVE))
            .order_by(Job.id)  # one lock order: two replicas reconciling one host never deadlock
            .with_for_update()
        )
        return list((await self.session.execute(stmt)).scalars())

    async def list_for(
        self,
        owner_id: str | None,
        *,
        state: str | None = None,
        tag: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 50,
        before: tuple[datetime, str] | None = None,
    ) -> list[Job]:
        stmt = sa.select(Job)
        if owner_id is not None:
            stmt = stmt.where(Job.owner_id == owner_id)
        if state:
            stmt = stmt.where(Job.state == state)
        if tag:
            tagged = sa.select(JobTag.job_id).where(JobTag.tag == tag)
            stmt = stmt.where(Job.id.in_(tagged))
        if created_after is not None:
            stmt = stmt.where(Job.created_at >= created_after)
        if created_before is not None:
            stmt = stmt.where(Job.created_at < created_before)
        if before:
            at, job_id = before
            stmt = stmt.where(
                sa.or_(Job.created_at < at, sa.and_(Job.created_at == at, Job.id < job_id))
            )
        stmt = stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        return list((await self.session.execute(stmt)).scalars())


CAPACITY_COLUMNS = (
    ProviderView.id,
    ProviderView.max_concurrent_tasks,
    ProviderView.price_per_hour,
    ProviderView.labels,
    ProviderView.gpus,
    ProviderView.last_placed_at,
    ProviderView.cpu_count,
    ProviderView.memory_mb,
    ProviderView.docker,
)
"""What a placement round reads of a provider (plain rows: no ORM identity map for ~1,000)."""


class ProviderViewRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, provider_id: str) -> ProviderView | None:
        return await self.session.get(ProviderView, provider_id)

    async def add(self, view: ProviderView) -> None:
        self.session.add(view)

    async def live_rows(self) -> Sequence[sa.Row[Any]]:
        """Live providers as plain rows (no ORM identity map: a round reads ~1,000 of them).

        Live means online as the registry last said: it alone decides liveness (heartbeat TTL
        and sweep) and announces an ``offline`` event, see docs/decisions.md.
        """
        stmt = sa.select(*CAPACITY_COLUMNS).where(ProviderView.status == "online")
        return (await self.session.execute(stmt)).all()

    async def live_versions(self) -> Sequence[Any]:
        """Live providers' (id, version, last_placed_at): what a round reads when it already
        holds the hardware of most of them (no JSON columns)."""
        pv = ProviderView
        stmt = sa.select(pv.id, pv.version, pv.last_placed_at).where(pv.status == "online")
        return (await self.session.execute(stmt)).all()

    async def known_versions(self) -> Sequence[Any]:
        """Every known provider's (id, version), offline ones too."""
        stmt = sa.select(ProviderView.id, ProviderView.version)
        return (await self.session.execute(stmt)).all()

    async def rows_of(self, provider_ids: list[str]) -> Sequence[Any]:
        """Full rows (as ``live_rows``) of these providers."""
        pv = ProviderView
        stmt = sa.select(
            pv.id,
            pv.version,
            pv.max_concurrent_tasks,
            pv.price_per_hour,
            pv.labels,
            pv.gpus,
            pv.last_placed_at,
            pv.cpu_count,
            pv.memory_mb,
            pv.docker,
        ).where(pv.id.in_(provider_ids))
        return (await self.session.execute(stmt)).all()

    async def mark_placed(self, provider_ids: list[str], at: datetime) -> None:
        if provider_ids:
            await self.session.execute(
                sa.update(ProviderView)
                .where(ProviderView.id.in_(provider_ids))
                .values(last_placed_at=at)
            )

    async def load_many(self, provider_ids: set[str]) -> list[ProviderView]:
        """Read these views into the session at once, so that ``session.get`` of each later
        (a batch of status reports metering usage) costs no query and no autoflush — while
        the caller holds the returned list: the identity map keeps unmodified objects only
        weakly, so views nobody references are gone again at once. Their hardware columns
        (``gpus``, ``labels``) are not read: metering reads the owner only."""
        if not provider_ids:
            return []
        pv = ProviderView
        stmt = (
            sa.select(pv)
            .where(pv.id.in_(sorted(provider_ids)))
            # usage metering reads the owner, never the hardware: the GPU lists (JSON) of
            # ~200 hosts per batch were decoded for nothing (issue 12)
            .options(sa.orm.defer(pv.gpus, raiseload=True), sa.orm.defer(pv.labels, raiseload=True))
        )
        return list((await self.session.execute(stmt)).scalars())

    async def owned_by(self, owner_id: str) -> list[str]:
        stmt = sa.select(ProviderView.id).where(ProviderView.owner_id == owner_id)
        return list((await self.session.execute(stmt)).scalars())

    async def all_known(self) -> Sequence[Any]:
        """Every provider the scheduler knows (offline ones too), as plain rows."""
        return (await self.session.execute(sa.select(*CAPACITY_COLUMNS))).all()
