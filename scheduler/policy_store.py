"""The policies' database side (issue 17): owner shares and quotas, decayed usage, cordons,
and what one placement round needs of them (:class:`RoundPolicies`). The decisions themselves
are the pure modules ``fairshare``, ``quotas``, ``preemption`` and ``gang``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from scheduler import fairshare, placement, preemption, quotas
from scheduler.models import AttemptUsage, Job, OwnerPolicy, OwnerUsage, ProviderView
from scheduler.repository import ACTIVE, ATTEMPT_USAGE, JobRepository
from scheduler.settings import SchedulerSettings
from shared.contracts import JobState

if TYPE_CHECKING:
    from scheduler.service import SchedulerService

USAGE_LOCKED = "scheduler.owner_usage_locked"
"""``session.info`` key: owners whose usage rows this unit of work already holds locked."""


async def lock_owner_usage(session: AsyncSession, owner_ids: set[str]) -> list[OwnerUsage]:
    """Lock these owners' usage rows at once (one query, in id order) for a batch of status
    reports: ``account_attempt`` then takes each from the identity map instead of a
    ``SELECT … FOR UPDATE`` (and the autoflush before it) per ended attempt — that was ~25 %
    of the scheduler's CPU in a burst (issue 12). Only for a session that lives one
    transaction (a unit of work): the mark does not outlive the session. The caller holds
    the returned rows while it applies (the identity map holds unmodified rows only weakly)."""
    if not owner_ids:
        return []
    stmt = (
        sa.select(OwnerUsage)
        .where(OwnerUsage.owner_id.in_(sorted(owner_ids)))
        .order_by(OwnerUsage.owner_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    rows = list((await session.execute(stmt)).scalars())
    session.info.setdefault(USAGE_LOCKED, set()).update(owner_ids)
    return rows


async def account_attempt(
    session: AsyncSession,
    job: Job,
    now: datetime,
    half_life_seconds: float,
    rows: JobRepository | None = None,
) -> None:
    """An attempt ended: its GPU-seconds go to the owner's decayed usage and quota window.
    ``rows``: the unit of work's job repository, which writes the attempt's row in bulk
    while it collects (a placement round, a status batch)."""
    if job.started_at is None or not job.gpu_count:
        return
    # once per attempt: only a transition ends one, and the state machine never repeats it
    gpu_seconds = max((now - job.started_at).total_seconds(), 0.0) * job.gpu_count
    ended = {
        "owner_id": job.owner_id,
        "job_id": job.id,
        "attempt": job.attempt,
        "ended_at": now,
        "gpu_seconds": gpu_seconds,
    }
    if rows is None or not rows.collect_row(ATTEMPT_USAGE, ended):
        session.add(AttemptUsage(**ended))
    if job.owner_id in session.info.get(USAGE_LOCKED, ()):
        row = await session.get(OwnerUsage, job.owner_id)  # locked: from the identity map
    else:
        row = await session.get(OwnerUsage, job.owner_id, with_for_update=True)
    if row is None:
        session.add(OwnerUsage(owner_id=job.owner_id, decayed_gpu_seconds=gpu_seconds, as_of=now))
    else:
        row.decayed_gpu_seconds = fairshare.add_usage(
            row.decayed_gpu_seconds, row.as_of, gpu_seconds, now, half_life_seconds
        )
        row.as_of = max(row.as_of, now)


async def set_policy(
    session: AsyncSession,
    owner_id: str,
    *,
    share: float,
    max_gpus: int | None,
    max_gpu_hours: float | None,
    period_seconds: int,
    now: datetime,
) -> OwnerPolicy:
    row = await session.get(OwnerPolicy, owner_id, with_for_update=True)
    if row is None:
        row = OwnerPolicy(owner_id=owner_id)
        session.add(row)
    row.share = share
    row.max_gpus = max_gpus
    row.max_gpu_hours = max_gpu_hours
    row.period_seconds = period_seconds
    row.updated_at = now
    await session.flush()
    return row


async def policies(session: AsyncSession) -> dict[str, OwnerPolicy]:
    rows = (await session.execute(sa.select(OwnerPolicy))).scalars()
    return {r.owner_id: r for r in rows}


async def cordoned_ids(session: AsyncSession) -> set[str]:
    stmt = sa.select(ProviderView.id).where(ProviderView.cordoned.is_(True))
    return set((await session.execute(stmt)).scalars())


async def queued_per_owner(
    session: AsyncSession, per_owner: int, exclude: set[str], limit: int
) -> list[Job]:
    """Up to ``limit`` more queued jobs, locked: every waiting owner's first, then every
    owner's second, … up to ``per_owner`` each (priority, then FIFO within an owner), besides
    ``exclude`` (the round's batch). The batch is the first N in priority/FIFO order, so one
    owner's flood could fill it and fair share could then only reorder that owner's jobs;
    with these every owner that waits is in the round, and a round stays bounded."""
    if per_owner <= 0 or limit <= 0:
        return []
    rn = (
        sa.func.row_number()
        .over(partition_by=Job.owner_id, order_by=(Job.priority.desc(), Job.created_at, Job.id))
        .label("rn")
    )
    ranked = (
        sa.select(Job.id, rn, Job.priority, Job.created_at)
        .where(Job.state == JobState.QUEUED)
        .subquery()
    )
    ids = (
        sa.select(ranked.c.id)
        .where(ranked.c.rn <= per_owner)
        .order_by(ranked.c.rn, ranked.c.priority.desc(), ranked.c.created_at, ranked.c.id)
        .limit(limit + len(exclude))
    )
    wanted = [i for i in (await session.execute(ids)).scalars() if i not in exclude][:limit]
    if not wanted:
        return []
    stmt = (
        sa.select(Job)
        .where(Job.id.in_(wanted), Job.state == JobState.QUEUED)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(stmt)).scalars())


async def _active_gangs(session: AsyncSession) -> list[Job]:
    stmt = sa.select(Job).where(Job.state.in_(ACTIVE), Job.gang.is_not(None))
    return [j for j in (await session.execute(stmt)).scalars() if j.gang]


async def gang_allocations(session: AsyncSession) -> list[tuple[str, list[int]]]:
    """GPUs held by gang ranks other than rank 0 (rank 0 is the job's own provider/GPUs)."""
    return [
        (r["provider_id"], list(r["gpu_indices"]))
        for j in await _active_gangs(session)
        for r in (j.gang or [])[1:]
    ]


async def gangs_on(session: AsyncSession, provider_id: str) -> list[Job]:
    """Active gang jobs with a rank other than rank 0 on this provider, locked."""
    ids = [
        j.id
        for j in await _active_gangs(session)
        if any(r["provider_id"] == provider_id for r in (j.gang or [])[1:])
    ]
    if not ids:
        return []
    stmt = sa.select(Job).where(Job.id.in_(ids), Job.state.in_(ACTIVE)).with_for_update()
    return list((await session.execute(stmt)).scalars())


@dataclass
class RoundPolicies:
    """What a placement round consults: order, quota admission, preemption plans."""

    settings: SchedulerSettings
    now: datetime
    cfg: fairshare.FairShareConfig
    usage: dict[str, float]
    quota: dict[str, quotas.Quota]
    use: dict[str, quotas.OwnerUse]
    running: list[preemption.Running]
    explained: dict[str, str] = field(default_factory=dict)

    @classmethod
    async def load(
        cls,
        session: AsyncSession,
        settings: SchedulerSettings,
        now: datetime,
        active: Sequence[Any] | None = None,
    ) -> RoundPolicies:
        """``active``: the round's rows of active attempts if it read them already (with at
        least the columns ``JobRepository.active`` reads)."""
        pol = await policies(session)
        cfg = settings.fairshare({o: p.share for o, p in pol.items()})
        usage = {
            r.owner_id: fairshare.decay(
                r.decayed_gpu_seconds, (now - r.as_of).total_seconds(), cfg.half_life_seconds
            )
            for r in (await session.execute(sa.select(OwnerUsage))).scalars()
        }
        quota = {
            o: quotas.Quota(p.max_gpus, p.max_gpu_hours, p.period_seconds)
            for o, p in pol.items()
            if p.max_gpus is not None or p.max_gpu_hours is not None
        }
        use: dict[str, quotas.OwnerUse] = {}
        running: list[preemption.Running] = []
        preempting = settings.preemption != "off"
        for r in await JobRepository(session).active() if active is None else active:
            u = use.setdefault(r.owner_id, quotas.OwnerUse())
            u.gpus_in_use += r.gpu_count
            if r.started_at is not None and r.gpu_count:
                ran = (now - r.started_at).total_seconds() * r.gpu_count
                usage[r.owner_id] = usage.get(r.owner_id, 0.0) + max(ran, 0.0)  # in flight
                q = quota.get(r.owner_id)
                if q is not None:
                    since = max(r.started_at, now - timedelta(seconds=q.period_seconds))
                    u.gpu_seconds_in_period += max((now - since).total_seconds(), 0) * r.gpu_count
            if r.provider_id and preempting:  # victims are only needed with preemption on
                running.append(
                    preemption.Running(
                        r.id,
                        r.owner_id,
                        r.priority,
                        r.provider_id,
                        tuple(r.gpu_indices or ()),
                        r.started_at,
                    )
                )
        for owner, q in quota.items():
            if q.max_gpu_hours is None:
                continue
            since = now - timedelta(seconds=q.period_seconds)
            stmt = sa.select(sa.func.coalesce(sa.func.sum(AttemptUsage.gpu_seconds), 0.0)).where(
                AttemptUsage.owner_id == owner, AttemptUsage.ended_at >= since
            )
            used = float((await session.execute(stmt)).scalar_one())
            use.setdefault(owner, quotas.OwnerUse()).gpu_seconds_in_period += used
        return cls(settings, now, cfg, usage, quota, use, running)

    def order(self, jobs: list[Job]) -> list[Job]:
        """Best effective priority first; sets ``effective_priority`` on each job."""
        by_id = {j.id: j for j in jobs}
        ranked = [fairshare.Ranked(j.id, j.owner_id, j.priority, j.created_at) for j in jobs]
        out = []
        for item, eff, factor in fairshare.order(ranked, self.usage, self.now, self.cfg):
            job = by_id[item.key]
            if job.effective_priority is None or abs(job.effective_priority - eff) >= 1.0:
                job.effective_priority = round(eff, 1)  # a write only when it moved
            self.explained[job.id] = (
                f"effective priority {eff:.0f} (priority {job.priority}, fair-share {factor:.2f})"
            )
            out.append(job)
        return out

    def explain(self, job: Job) -> str:
        return self.explained.get(job.id, "")

    @staticmethod
    def ask(job: Job) -> quotas.Ask:
        return quotas.Ask(job.gpu_count, job.timeout_seconds)

    def over_quota(self, job: Job) -> str | None:
        return quotas.over_quota(
            self.quota.get(job.owner_id),
            self.use.setdefault(job.owner_id, quotas.OwnerUse()),
            self.ask(job),
        )

    def placed(self, job: Job) -> None:
        quotas.take(self.use.setdefault(job.owner_id, quotas.OwnerUse()), self.ask(job))

    def plan(
        self, job: Job, demand: placement.Demand, caps: list[placement.Capacity]
    ) -> preemption.Plan | None:
        policy = self.settings.preemption
        if policy == "off":
            return None
        got = preemption.plan(
            preemption.Preemptor(job.owner_id, job.priority, demand),
            caps,
            self.running,
            policy=policy,
            now=self.now,
            min_run_seconds=self.settings.preemption_min_run_seconds,
        )
        return got if got is not None and got.victims else None

    async def evict(
        self, svc: SchedulerService, plan: preemption.Plan, by: Job, cap: placement.Capacity
    ) -> bool:
        """Preempt the plan's victims (requeued, not failed) and free their capacity here.
        False if one of them is no longer running (it ended meanwhile): the job waits."""
        victims = []
        for v in plan.victims:
            row = await svc.jobs.get(v.job_id, for_update=True)
            if row is None or row.state not in ACTIVE or row.provider_id != v.provider_id:
                return False
            victims.append(row)
        for row, v in zip(victims, plan.victims, strict=True):
            await svc.preempt(row, by)
            placement.release(cap, v.gpu_indices)
            self.running.remove(v)
            self.use.setdefault(row.owner_id, quotas.OwnerUse()).gpus_in_use -= row.gpu_count
        return True
