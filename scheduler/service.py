"""Scheduler decisions: intake, placement, status, cancel, provider loss. One transition path."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from nats.js import JetStreamContext

from scheduler import placement, states
from scheduler.models import Job, JobEvent, ProviderView
from scheduler.repository import JobRepository, ProviderViewRepository
from shared.auth import Principal
from shared.contracts import (
    JobState,
    JobSubmitted,
    ProviderEvent,
    TaskCancel,
    TaskDispatch,
    TaskStatus,
)
from shared.db import UnitOfWork, utcnow
from shared.errors import NotFound
from shared.nats import publish

log = structlog.get_logger(__name__)


def demand_of(job: Job) -> placement.Demand:
    return placement.Demand(
        gpu_count=job.gpu_count,
        gpu_model=job.gpu_model,
        min_vram_mb=job.min_vram_mb,
        max_price_per_hour=job.max_price_per_hour,
        labels=dict(job.spec.get("labels") or {}),
    )


def capacity_of(view: ProviderView) -> placement.Capacity:
    return placement.Capacity(
        provider_id=view.id,
        price_per_hour=view.price_per_hour,
        max_tasks=view.max_concurrent_tasks,
        labels=dict(view.labels or {}),
        gpus=[
            placement.GpuSlot(
                index=int(g["index"]),
                name=str(g.get("name", "")),
                memory_total_mb=int(g.get("memory_total_mb", 0)),
                healthy=bool(g.get("healthy", True)),
            )
            for g in view.gpus or []
        ],
        last_placed_at=view.last_placed_at,
    )


class SchedulerService:
    def __init__(self, uow: UnitOfWork, js: JetStreamContext, heartbeat_ttl: float = 30.0) -> None:
        self.uow = uow
        self.js = js
        self.jobs = JobRepository(uow.session)
        self.providers = ProviderViewRepository(uow.session)
        self.heartbeat_ttl = heartbeat_ttl

    # --- the one place a job changes state ----------------------------------------------------

    async def transition(self, job: Job, to: JobState, cause: str) -> None:
        states.check(job.state, to)
        now = utcnow()
        await self.jobs.add_event(
            JobEvent(
                job_id=job.id,
                at=now,
                from_state=job.state,
                to_state=to,
                attempt=job.attempt,
                cause=cause[:255],
            )
        )
        log.info("job.transition", job_id=job.id, frm=job.state, to=str(to), cause=cause)
        job.state = to
        job.updated_at = now
        if to == JobState.DISPATCHED:
            job.dispatched_at = now
        elif to == JobState.RUNNING:
            job.started_at = now
        elif to.terminal:
            job.finished_at = now

    async def _requeue_or_fail(self, job: Job, cause: str) -> None:
        if job.attempt <= job.max_retries:
            await self.transition(job, JobState.QUEUED, cause)
            job.attempt += 1
            job.provider_id = None
            job.gpu_indices = []
        else:
            job.error = f"{cause}; retries exhausted"
            await self.transition(job, JobState.FAILED, job.error)

    # --- intake -----------------------------------------------------------------------------

    async def intake(self, sub: JobSubmitted, correlation_id: str | None) -> bool:
        """Store a submitted job. A redelivered submission changes nothing."""
        if await self.jobs.get(sub.job_id) is not None:
            return False
        spec = sub.spec
        res = spec.get("resources") or {}
        job = Job(
            id=sub.job_id,
            owner_id=sub.owner_id,
            type=sub.type,
            name=sub.name,
            state=JobState.QUEUED,
            priority=int(spec.get("priority", 5)),
            attempt=1,
            max_retries=int(spec.get("max_retries", 3)),
            gpu_count=int(res.get("gpu_count", 0)),
            gpu_model=res.get("gpu_model"),
            min_vram_mb=int(res.get("min_vram_mb", 0)),
            max_price_per_hour=spec.get("max_price_per_hour"),
            timeout_seconds=spec.get("timeout_seconds"),
            spec=spec,
            tags=list(spec.get("tags") or []),
            gpu_indices=[],
            correlation_id=correlation_id,
            created_at=sub.submitted_at,
            updated_at=utcnow(),
        )
        await self.jobs.add(job)
        await self.jobs.add_event(
            JobEvent(
                job_id=job.id,
                at=utcnow(),
                from_state=None,
                to_state=JobState.QUEUED,
                attempt=1,
                cause="submitted",
            )
        )
        log.info("job.stored", job_id=job.id, owner_id=job.owner_id)
        return True

    # --- placement --------------------------------------------------------------------------

    async def place(self, limit: int = 200) -> int:
        """One placement round: queued jobs in priority/FIFO order onto live providers."""
        now = utcnow()
        queued = await self.jobs.queued(limit)
        if not queued:
            return 0
        views = await self.providers.live(now - timedelta(seconds=self.heartbeat_ttl))
        caps = {v.id: capacity_of(v) for v in views}
        for pid, indices in await self.jobs.active_allocations():
            if pid in caps:
                caps[pid].running_tasks += 1
                caps[pid].used_indices.update(indices)
        known = [capacity_of(v) for v in await self.providers.all_known()]
        placed = 0
        for job in queued:
            demand = demand_of(job)
            choice = placement.choose(demand, list(caps.values()))
            if choice is None:
                if known and not placement.ever_fits(demand, known):
                    job.error = "no provider can ever satisfy this job's resources"
                    await self.transition(job, JobState.FAILED, job.error)
                continue
            placement.allocate(caps[choice.provider_id], choice, now)
            job.provider_id = choice.provider_id
            job.gpu_indices = choice.gpu_indices
            await self.transition(job, JobState.DISPATCHED, f"placed on {choice.provider_id}")
            view = await self.providers.get(choice.provider_id)
            if view is not None:
                view.last_placed_at = now
            self._dispatch_after_commit(job)
            placed += 1
        return placed

    def _dispatch_after_commit(self, job: Job) -> None:
        task = TaskDispatch(
            job_id=job.id,
            attempt=job.attempt,
            provider_id=job.provider_id or "",
            type=job.type,  # type: ignore[arg-type]
            name=job.name,
            spec=job.spec,
            gpu_indices=list(job.gpu_indices),
            timeout_seconds=job.timeout_seconds,
            correlation_id=job.correlation_id,
        )

        async def send() -> None:
            await publish(
                self.js,
                f"tasks.dispatch.{task.provider_id}",
                task,
                msg_id=f"{task.job_id}:{task.attempt}",
                correlation_id=task.correlation_id,
            )
            log.info(
                "job.dispatched",
                job_id=task.job_id,
                provider_id=task.provider_id,
                attempt=task.attempt,
                correlation_id=task.correlation_id,
            )

        self.uow.after_commit(send)

    # --- status from daemons ----------------------------------------------------------------

    async def apply_status(self, st: TaskStatus) -> None:
        job = await self.jobs.get(st.job_id, for_update=True)
        if job is None:
            log.warning("status.unknown_job", job_id=st.job_id)
            return
        if st.provider_id != job.provider_id or st.attempt != job.attempt:
            log.warning(
                "status.ignored",
                job_id=job.id,
                reason="stale attempt or other provider",
                provider_id=st.provider_id,
                attempt=st.attempt,
            )
            return
        if job.state == st.state or JobState(job.state).terminal:
            return  # a redelivery, or news about a job that has already ended
        if st.state == JobState.QUEUED:
            await self._requeue_or_fail(job, st.error or "returned by the provider")
            return
        if st.state in (
            JobState.COMPLETED,
            JobState.FAILED,
            JobState.TIMED_OUT,
            JobState.CANCELLED,
        ):
            job.exit_code = st.exit_code
            job.error = st.error
        await self.transition(job, st.state, f"reported by provider {st.provider_id}")

    # --- cancel -----------------------------------------------------------------------------

    async def get_visible(self, job_id: str, principal: Principal) -> Job:
        job = await self.jobs.get(job_id)
        if job is None or not principal.can_see(job.owner_id):
            raise NotFound("job not found")
        return job

    async def cancel(self, job_id: str, principal: Principal) -> Job:
        job = await self.get_visible(job_id, principal)
        job = await self.jobs.get(job_id, for_update=True) or job
        if JobState(job.state).terminal:
            return job
        provider_id, attempt = job.provider_id, job.attempt
        await self.transition(job, JobState.CANCELLED, f"cancelled by {principal.user_id}")
        if provider_id:
            cancel = TaskCancel(job_id=job.id, attempt=attempt, provider_id=provider_id)

            async def send() -> None:
                await publish(
                    self.js,
                    f"tasks.dispatch.{provider_id}",
                    cancel,
                    msg_id=f"{job.id}:{attempt}:cancel",
                    correlation_id=job.correlation_id,
                )

            self.uow.after_commit(send)
        return job

    # --- provider events --------------------------------------------------------------------

    async def on_provider_event(self, ev: ProviderEvent) -> None:
        view = await self.providers.get(ev.provider_id)
        if view is None:
            if ev.kind in ("offline", "deleted"):
                return
            view = ProviderView(id=ev.provider_id, last_seen_at=ev.at)
            await self.providers.add(view)
        elif ev.at < view.last_seen_at and ev.kind != "offline":
            return  # out of order: a newer event already spoke for this provider
        view.status = "offline" if ev.kind == "deleted" else ev.status
        view.max_concurrent_tasks = ev.max_concurrent_tasks
        view.price_per_hour = ev.price_per_hour
        view.labels = dict(ev.labels)
        view.gpus = list(ev.gpus)
        if ev.kind != "offline":
            view.last_seen_at = max(view.last_seen_at, ev.at)
        if view.status != "online":
            for job in await self.jobs.active_on(ev.provider_id):
                await self._requeue_or_fail(job, f"provider {ev.provider_id} {view.status}")

    @staticmethod
    def public(job: Job) -> dict[str, Any]:
        return {
            "job_id": job.id,
            "name": job.name,
            "type": job.type,
            "status": job.state,
            "exit_code": job.exit_code,
            "error": job.error,
            "provider_id": job.provider_id,
            "gpu_indices": list(job.gpu_indices or []),
            "attempt": job.attempt,
            "max_retries": job.max_retries,
            "priority": job.priority,
            "tags": list(job.tags or []),
            "owner_id": job.owner_id,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "dispatched_at": job.dispatched_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
        }
