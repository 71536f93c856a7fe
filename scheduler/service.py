"""Scheduler decisions: intake, status, cancel, provider loss, deadlines. One transition path.

Placement and dispatch live in ``dispatch.py``; both change state only through
:meth:`SchedulerService.transition`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter

from scheduler import states
from scheduler.models import Job, JobEvent, JobTag, ProviderView
from scheduler.repository import JobRepository, ProviderViewRepository
from scheduler.settings import SchedulerSettings
from scheduler.usage import UsageRepository, meter
from shared.auth import Principal
from shared.contracts import (
    JobState,
    JobSubmitted,
    ProviderEvent,
    TaskCancel,
    TaskStatus,
    log_key,
)
from shared.db import UnitOfWork, utcnow
from shared.errors import NotFound
from shared.nats import publish

log = structlog.get_logger(__name__)

status_rejected = Counter(
    "dante_scheduler_status_rejected_total",
    "Task status reports refused: from a provider the attempt is not assigned to, or stale.",
    ["reason"],
)
TERMINAL_REPORTS = (JobState.COMPLETED, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED)


class SchedulerService:
    def __init__(
        self, uow: UnitOfWork, js: JetStreamContext, settings: SchedulerSettings | None = None
    ) -> None:
        self.uow = uow
        self.js = js
        self.settings = settings or SchedulerSettings()
        self.jobs = JobRepository(uow.session)
        self.providers = ProviderViewRepository(uow.session)
        self.usage = UsageRepository(uow.session)

    # --- the one place a job changes state ----------------------------------------------------

    async def note(self, job: Job, cause: str) -> None:
        """An event that is not a transition (why a queued job still waits)."""
        await self.jobs.add_event(
            JobEvent(
                job_id=job.id,
                at=utcnow(),
                from_state=job.state,
                to_state=job.state,
                attempt=job.attempt,
                cause=cause[:255],
            )
        )

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
            job.wait_reason = None
            job.start_deadline = now + timedelta(seconds=self.settings.dispatch_timeout_seconds)
        elif to == JobState.RUNNING:
            job.started_at = now
            job.start_deadline = None
        elif to.terminal:
            job.finished_at = now
            job.start_deadline = None
            record = meter(job, now)
            if record is not None:
                await self.usage.add(record)

    async def _requeue_or_fail(self, job: Job, cause: str, *, cancel_old: bool = False) -> None:
        """Retry as attempt + 1, or fail when retries are spent. ``cancel_old`` tells the
        provider to drop the old attempt (it may still start it late, or be running it)."""
        if cancel_old and job.provider_id:
            self._cancel_after_commit(job, job.provider_id, job.attempt)
        if job.attempt <= job.max_retries:
            await self.transition(job, JobState.QUEUED, cause)
            job.attempt += 1
            job.provider_id = None
            job.gpu_indices = []
            job.started_at = None
            job.start_deadline = None
            job.price_per_hour = None
            job.gpu_name = None
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
        tags = sorted({str(t)[:128] for t in spec.get("tags") or []})
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
            min_compute_capability=res.get("min_compute_capability"),
            max_price_per_hour=spec.get("max_price_per_hour"),
            timeout_seconds=spec.get("timeout_seconds"),
            spec=spec,
            tags=list(spec.get("tags") or []),
            gpu_indices=[],
            artifacts=[],
            correlation_id=correlation_id,
            created_at=sub.submitted_at,
            updated_at=utcnow(),
        )
        await self.jobs.add(job)
        for tag in tags:
            self.uow.session.add(JobTag(job_id=job.id, tag=tag))
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

    # --- status from daemons ----------------------------------------------------------------

    async def apply_status(self, st: TaskStatus) -> None:
        job = await self.jobs.get(st.job_id, for_update=True)
        if job is None:
            status_rejected.labels("unknown_job").inc()
            log.warning("status.rejected", job_id=st.job_id, reason="unknown job")
            return
        if st.provider_id != job.provider_id or st.attempt != job.attempt:
            # Only the provider the current attempt was placed on may move the job; anything
            # else is a stale attempt (requeued away from it) or a provider speaking out of turn.
            reason = "other_provider" if st.attempt == job.attempt else "stale_attempt"
            status_rejected.labels(reason).inc()
            log.warning(
                "status.rejected",
                job_id=job.id,
                reason=reason,
                reported_by=st.provider_id,
                assigned_to=job.provider_id,
                attempt=st.attempt,
                current_attempt=job.attempt,
            )
            return
        if job.state == st.state or JobState(job.state).terminal:
            return  # a redelivery, or news about a job that has already ended
        if st.state == JobState.QUEUED:
            await self._requeue_or_fail(job, st.error or "returned by the provider")
            return
        if st.state in TERMINAL_REPORTS:
            job.exit_code = st.exit_code
            job.error = st.error
            job.artifacts = self._artifacts(job, st.artifacts)
        await self.transition(job, st.state, f"reported by provider {st.provider_id}")

    @staticmethod
    def _artifacts(job: Job, keys: list[str]) -> list[dict[str, str]]:
        """Keep only keys this attempt was allowed to write: its outputs and its log."""
        log_name = log_key(job.id, job.attempt)
        allowed = set(job.spec.get("outputs") or [])
        out = [{"key": log_name, "kind": "log"}] if log_name in keys else []
        out += [{"key": k, "kind": "output"} for k in keys if k in allowed]
        return out

    async def expire_dispatches(self, limit: int = 200, *, reports_pending: bool = False) -> int:
        """Dispatched attempts not reported running by their deadline go back to the queue.

        While status reports wait unread (after a restart, or a burst) a "running" report may
        be among them, so only attempts a whole extra window late are expired then.
        """
        cutoff = utcnow()
        if reports_pending:
            cutoff -= timedelta(seconds=self.settings.dispatch_timeout_seconds)
        expired = await self.jobs.dispatch_expired(cutoff, limit)
        for job in expired:
            await self._requeue_or_fail(
                job, f"not started by its deadline on provider {job.provider_id}", cancel_old=True
            )
        return len(expired)

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
            self._cancel_after_commit(job, provider_id, attempt)
        return job

    def _cancel_after_commit(self, job: Job, provider_id: str, attempt: int) -> None:
        cancel = TaskCancel(job_id=job.id, attempt=attempt, provider_id=provider_id)
        js, correlation_id = self.js, job.correlation_id

        async def send() -> None:
            try:
                await publish(
                    js,
                    f"tasks.dispatch.{provider_id}",
                    cancel,
                    msg_id=f"{cancel.job_id}:{attempt}:cancel",
                    correlation_id=correlation_id,
                )
            except Exception as exc:  # the stale attempt's reports are refused anyway
                log.warning("job.cancel_publish_failed", job_id=cancel.job_id, error=str(exc))

        self.uow.after_commit(send)

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
        if ev.owner_id:
            view.owner_id = ev.owner_id
        if ev.kind != "offline":
            view.last_seen_at = max(view.last_seen_at, ev.at)
        if view.status != "online":
            for job in await self.jobs.active_on(ev.provider_id):
                await self._requeue_or_fail(
                    job, f"provider {ev.provider_id} {view.status}", cancel_old=True
                )


def _shown_params(spec: dict[str, Any]) -> dict[str, Any]:
    """What runs (script, image, command), so a job can be read back and rerun. Environment
    values may be secrets: only their names are shown (an admin sees every job)."""
    params = dict(spec.get("params") or {})
    if "docker_env_vars" in params:
        params["docker_env_vars"] = dict.fromkeys(params["docker_env_vars"], "")
    return params


def public(job: Job, *, detail: bool = False) -> dict[str, Any]:
    """A job as the API shows it; ``detail`` (one job, not a listing) adds what it runs."""
    shown = {
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
        "resources": (job.spec or {}).get("resources") or {},
        "max_price_per_hour": job.max_price_per_hour,
        "labels": (job.spec or {}).get("labels") or {},
        "inputs": (job.spec or {}).get("inputs") or [],
        "outputs": (job.spec or {}).get("outputs") or [],
        "artifacts": list(job.artifacts or []),
        "waiting_reason": job.wait_reason if job.state == JobState.QUEUED else None,
        "price_per_hour": job.price_per_hour,
        "gpu_model": job.gpu_name,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "dispatched_at": job.dispatched_at,
        "start_deadline": job.start_deadline,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "timeout_seconds": job.timeout_seconds,
    }
    if detail:  # a script may be 256 KiB: not repeated 500 times in a listing
        shown["params"] = _shown_params(job.spec or {})
        shown["env_names"] = sorted((job.spec or {}).get("env") or {})
    return shown
