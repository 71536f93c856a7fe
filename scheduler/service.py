"""Scheduler decisions: intake, status, cancel, provider loss, deadlines. One transition path.

Placement and dispatch live in ``dispatch.py``; both change state only through
:meth:`SchedulerService.transition`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter

from scheduler import billing, gang_dispatch, leases, metrics, policy_store, states
from scheduler.models import Job, ProviderView, UsageRecord
from scheduler.repository import (
    USAGE_COLUMN_OF,
    USAGE_RECORDS,
    JobRepository,
    ProviderViewRepository,
)
from scheduler.schemas import UsageRead, UsageRecordRead, UsageScope
from scheduler.settings import SchedulerSettings
from scheduler.usage import UsageRepository, usage_fields
from shared.auth import Principal
from shared.contracts import (
    JobState,
    JobSubmitted,
    ProviderEvent,
    TaskCancel,
    TaskStatus,
    log_key,
    task_subject,
)
from shared.db import UnitOfWork, utcnow
from shared.errors import Conflict, NotFound
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
        await self.jobs.add_event(job.id, utcnow(), job.state, job.state, job.attempt, cause)

    async def transition(self, job: Job, to: JobState, cause: str) -> None:
        states.check(job.state, to)
        now = utcnow()
        ends_attempt = to.terminal or (to == JobState.QUEUED and job.provider_id is not None)
        await self.jobs.add_event(job.id, now, job.state, to, job.attempt, cause)
        log.info("job.transition", job_id=job.id, frm=job.state, to=str(to), cause=cause)
        metrics.on_transition(self.uow, job, to, now, cause)
        job.state = to
        job.updated_at = now
        job.lease_expires_at = job.run_deadline = None  # set again below if it runs now
        if to == JobState.DISPATCHED:
            job.dispatched_at = now
            job.wait_reason = None
            job.start_deadline = now + timedelta(seconds=self.settings.dispatch_timeout_seconds)
        elif to == JobState.RUNNING:
            job.started_at = now
            job.start_deadline = None
            job.lease_expires_at = now + timedelta(seconds=self.settings.lease_seconds)
            if job.timeout_seconds:
                # the daemon's own SIGTERM → ``grace_seconds`` → SIGKILL, then our margin
                grace = job.job_spec.grace_seconds + self.settings.timeout_grace_seconds
                job.run_deadline = now + timedelta(seconds=job.timeout_seconds + grace)
        elif to.terminal:
            job.finished_at = now
            job.start_deadline = None
            for used in usage_fields(job, now):  # one per host: a gang's ranks each
                row = {USAGE_COLUMN_OF[k]: v for k, v in used.items()}
                if not self.jobs.collect_row(USAGE_RECORDS, row):
                    await self.usage.add(UsageRecord(**used))
                metrics.on_usage(self.uow, used["gpu_seconds"], used["seconds"], used["cost"])
        if ends_attempt:  # billing's copy, in integers, through the outbox (scheduler/billing.py)
            await billing.record_usage(
                self.uow.session, job, now, final=to.terminal, rows=self.jobs
            )
            # issue 17: the owner's fair-share usage and GPU-hour quota window
            await policy_store.account_attempt(
                self.uow.session, job, now, self.settings.fairshare_half_life_seconds, self.jobs
            )

    async def _requeue_or_fail(self, job: Job, cause: str, *, cancel_old: bool = False) -> None:
        """Retry as attempt + 1, or fail when retries are spent. ``cancel_old`` tells the
        provider to drop the old attempt (it may still start it late, or be running it)."""
        if cancel_old and job.provider_id:
            unstarted = job.state == JobState.DISPATCHED
            self._cancel_after_commit(job, job.provider_id, job.attempt, unstarted=unstarted)
        # preempted attempts (issue 17) are not failures: they do not spend retries
        if job.attempt - (job.preemptions or 0) <= job.max_retries:
            await self.transition(job, JobState.QUEUED, cause)
            self._next_attempt(job)
        else:
            job.error = f"{cause}; retries exhausted"
            await self.transition(job, JobState.FAILED, job.error)

    @staticmethod
    def _next_attempt(job: Job) -> None:
        job.attempt += 1
        job.provider_id = None
        job.gpu_indices = []
        job.started_at = None
        job.start_deadline = None
        job.price_per_hour = None
        job.gpu_name = None
        job.gang = None

    async def preempt(self, job: Job, by: Job) -> None:
        """Issue 17: stop this attempt for a higher-priority job (the daemon gets a cancel:
        SIGTERM, its grace, then SIGKILL) and requeue it as attempt + 1, counted as preempted
        (not against ``max_retries``); billed only for the time it ran (the attempt ends now)."""
        await self.evict(job, f"preempted by job {by.id} (priority {by.priority})")

    async def evict(self, job: Job, cause: str) -> None:
        """Stop the running attempt and requeue it, counted as preempted (see ``preempt``)."""
        if job.provider_id:
            self._cancel_after_commit(job, job.provider_id, job.attempt)
        await self.transition(job, JobState.QUEUED, cause)
        job.preemptions = (job.preemptions or 0) + 1
        self._next_attempt(job)

    # --- intake -----------------------------------------------------------------------------

    async def intake(self, sub: JobSubmitted, correlation_id: str | None) -> bool:
        """Store a submitted job. A redelivered submission changes nothing."""
        return await self.intake_many([(sub, correlation_id)]) == 1

    async def intake_many(self, batch: list[tuple[JobSubmitted, str | None]]) -> int:
        """Store a batch of submissions: one query for the ones already stored, then one
        bulk INSERT each of jobs, tags and events (Core statements, not an ORM flush of three
        objects per job: issue 12); redelivered or repeated submissions change nothing.
        Returns how many were new."""
        seen = await self.jobs.existing_ids([sub.job_id for sub, _ in batch])
        now = utcnow()
        jobs: list[dict[str, Any]] = []
        tags: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for sub, cid in batch:
            if sub.job_id in seen:
                continue
            seen.add(sub.job_id)
            jobs.append(self._row_of(sub, cid, now))
            tags += [{"job_id": sub.job_id, "tag": t} for t in sorted(set(sub.spec.tags))]
            events.append(
                {
                    "job_id": sub.job_id,
                    "at": now,
                    "from_state": None,
                    "to_state": JobState.QUEUED,
                    "attempt": 1,
                    "cause": "submitted",
                }
            )
            log.info("job.stored", job_id=sub.job_id, owner_id=sub.owner_id)
        await self.jobs.insert_submitted(jobs, tags, events)
        return len(jobs)

    @staticmethod
    def _row_of(sub: JobSubmitted, correlation_id: str | None, now: datetime) -> dict[str, Any]:
        """The ``jobs`` row of a new submission (keys are column names)."""
        spec = sub.spec
        res = spec.resources
        return {
            "id": sub.job_id,
            "owner_id": sub.owner_id,
            "type": sub.type,
            "name": sub.name,
            "state": JobState.QUEUED,
            "priority": spec.priority,
            "attempt": 1,
            "max_retries": spec.max_retries,
            "gpu_count": res.gpu_count * (res.nodes or 1),  # a gang's GPUs in all (issue 17)
            "gpu_model": res.gpu_model,
            "min_vram_mb": res.min_vram_mb,
            "min_compute_capability": res.min_compute_capability,
            "cpu": res.cpu,
            "memory_mb": res.memory_mb,
            "max_price_per_hour": spec.max_price_per_hour,
            "timeout_seconds": spec.timeout_seconds,
            "spec": spec.model_dump(mode="json"),
            "tags": list(spec.tags),
            "gpu_indices": [],
            "artifacts": [],
            "correlation_id": correlation_id,
            "created_at": sub.submitted_at,
            "updated_at": now,
            "version": 1,
            "preemptions": 0,
        }

    async def intake_failed(self, sub: JobSubmitted, reason: str) -> bool:
        """Store a submission that intake keeps failing on as a ``failed`` job with the reason,
        so its owner sees why instead of a 404 forever. Only the fields that cannot be the
        cause go in, and the spec (valid by its contract, and needed to show the job).
        False if the job exists already."""
        if await self.jobs.get(sub.job_id) is not None:
            return False
        now = utcnow()
        error = f"intake failed: {reason}"[:2000]
        job = Job(
            id=sub.job_id,
            owner_id=sub.owner_id,
            type=sub.type,
            name=sub.name[:128],
            state=JobState.FAILED,
            priority=5,
            attempt=1,
            max_retries=0,
            spec=sub.spec.model_dump(mode="json"),
            tags=[],
            gpu_indices=[],
            artifacts=[],
            error=error,
            created_at=sub.submitted_at,
            updated_at=now,
            finished_at=now,
        )
        await self.jobs.add(job)
        await self.jobs.add_event(job.id, now, None, JobState.FAILED, 1, error)
        log.error("job.intake_failed", job_id=job.id, owner_id=job.owner_id, reason=reason)
        return True

    # --- status from daemons ----------------------------------------------------------------

    async def apply_status_batch(self, batch: list[TaskStatus]) -> None:
        """Apply a fetched batch of reports in this unit of work: their jobs, providers and
        owners' usage rows are read (and locked) once, each in id order, then each report is
        applied as :meth:`apply_status` alone would."""
        self.jobs.collect_events()
        locked = await self.jobs.lock_many([st.job_id for st in batch], without_spec=True)
        # the spec only for what reads it: a start with a timeout (its grace), artifacts kept
        wants = {
            st.job_id
            for st in batch
            if st.job_id in locked
            and (
                st.artifacts or (st.state == JobState.RUNNING and locked[st.job_id].timeout_seconds)
            )
        }
        await self.jobs.load_specs([locked[j] for j in wants])
        ending = {st.job_id for st in batch if st.state != JobState.RUNNING}
        owners = {j.owner_id for j in locked.values() if j.id in ending}
        # held (not only loaded) while the batch applies: the identity map's refs are weak
        hosts = {j.provider_id for j in locked.values() if j.provider_id}
        held = (
            await self.providers.load_many(hosts),
            await policy_store.lock_owner_usage(self.uow.session, owners),
        )
        for st in batch:
            await self.apply_status(st, locked)
        del held
        for job in locked.values():
            self.jobs.stage(job)  # locked above: one UPDATE per kind of change, not per job
        await self.jobs.write_staged()

    async def apply_status(self, st: TaskStatus, locked: dict[str, Job] | None = None) -> None:
        """Apply one report. ``locked``: the batch's jobs, already read ``FOR UPDATE``."""
        job = locked.get(st.job_id) if locked is not None else None
        if job is None:
            job = await self.jobs.get(st.job_id, for_update=True)
        if job is None:
            status_rejected.labels("unknown_job").inc()
            log.warning("status.rejected", job_id=st.job_id, reason="unknown job")
            return
        if job.gang:  # issue 17: a gang's ranks report from several providers
            await gang_dispatch.apply_rank_status(self, job, st)
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
            if st.state == JobState.RUNNING:  # it started an attempt no longer its own: stop it
                self._cancel_after_commit(job, st.provider_id, st.attempt)
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
        if not keys:
            return []
        log_name = log_key(job.id, job.attempt)
        # what a listing reads of the spec: its outputs, without validating the program
        allowed = set(job.listed_spec.outputs)
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
        metrics.on_deadline_expiries(self.uow, len(expired))
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
            raise Conflict(
                f"job is already {job.state}; there is nothing to cancel",
                code="job_already_ended",
            )
        provider_id, attempt = job.provider_id, job.attempt
        unstarted = job.state == JobState.DISPATCHED
        await self.transition(job, JobState.CANCELLED, f"cancelled by {principal.user_id}")
        if provider_id:
            self._cancel_after_commit(job, provider_id, attempt, unstarted=unstarted)
        return job

    def _cancel_after_commit(
        self, job: Job, provider_id: str, attempt: int, *, unstarted: bool = False
    ) -> None:
        """Tell the provider to stop ``attempt``. ``unstarted``: its task may still wait in
        TASKS, so it is deleted there first; the cancel alone would queue behind it, and a
        daemon (re)starting meanwhile would start the old attempt before seeing the cancel.
        A gang's other ranks are told too (issue 17)."""
        if job.gang and attempt == job.attempt and provider_id == job.provider_id:
            for r in job.gang[1:]:
                self._send_cancel(job, r["provider_id"], attempt, f":r{r['rank']}", False)
        self._send_cancel(job, provider_id, attempt, "", unstarted)

    def _send_cancel(
        self, job: Job, provider_id: str, attempt: int, rank: str, unstarted: bool
    ) -> None:
        cancel = TaskCancel(job_id=job.id, attempt=attempt, provider_id=provider_id)
        js, correlation_id = self.js, job.correlation_id

        async def send() -> None:
            if unstarted:
                try:
                    await leases.remove_dispatch(js, provider_id, cancel.job_id, attempt)
                except Exception as exc:  # the daemon's fence and the stale-report cancel remain
                    log.warning("job.task_remove_failed", job_id=cancel.job_id, error=str(exc))
            try:
                await publish(
                    js,
                    task_subject(provider_id),
                    cancel,
                    msg_id=f"{cancel.job_id}:{attempt}{rank}:cancel",
                    correlation_id=correlation_id,
                )
            except Exception as exc:  # the stale attempt's reports are refused anyway
                log.warning("job.cancel_publish_failed", job_id=cancel.job_id, error=str(exc))

        self.uow.after_commit(send)

    # --- usage -----------------------------------------------------------------------------

    async def usage_for(
        self,
        principal: Principal,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        records: int = 50,
    ) -> UsageRead:
        """A requester sees what it used and owes; a provider what it earned; an admin, totals."""
        owner: str | None = None
        provider_ids: list[str] | None = None
        scope: UsageScope
        if principal.role == "provider":
            provider_ids = await self.providers.owned_by(principal.user_id)
            if principal.provider_id and principal.provider_id not in provider_ids:
                provider_ids.append(principal.provider_id)
            scope = "provider"
        elif principal.is_admin:
            scope = "all"
        else:
            owner = principal.user_id
            scope = "requester"
        totals, by_gpu = await self.usage.summary(
            owner_id=owner, provider_ids=provider_ids, since=since, until=until
        )
        rows = await self.usage.records(owner_id=owner, provider_ids=provider_ids, limit=records)
        return UsageRead(
            scope=scope,
            provider_ids=provider_ids,
            totals=totals,
            by_gpu_model=by_gpu,
            records=[UsageRecordRead.model_validate(r) for r in rows],
        )

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
        before = (
            view.status,
            view.max_concurrent_tasks,
            view.price_per_hour,
            view.labels,
            view.cpu_count,
            view.memory_mb,
            view.docker,
        )
        gpus_before = view.gpus
        view.status = "offline" if ev.kind == "deleted" else ev.status
        view.max_concurrent_tasks = ev.max_concurrent_tasks
        view.price_per_hour = ev.price_per_hour
        view.labels = dict(ev.labels)
        view.gpus = [g.model_dump() for g in ev.gpus]
        view.cpu_count = ev.cpu_count
        view.memory_mb = ev.memory_mb
        view.docker = ev.docker
        after = (
            view.status,
            view.max_concurrent_tasks,
            view.price_per_hour,
            view.labels,
            view.cpu_count,
            view.memory_mb,
            view.docker,
        )
        if before != after or gpus_before != view.gpus:  # what placement caches moved
            view.version = (view.version or 0) + 1
        if ev.owner_id:
            view.owner_id = ev.owner_id
        if ev.kind != "offline":
            view.last_seen_at = max(view.last_seen_at, ev.at)
        if view.status != "online":
            for job in await self.jobs.active_on(ev.provider_id):
                await self._requeue_or_fail(
                    job, f"provider {ev.provider_id} {view.status}", cancel_old=True
                )
            # issue 17: a gang with any rank there is requeued whole
            for job in await policy_store.gangs_on(self.uow.session, ev.provider_id):
                await self._requeue_or_fail(
                    job, f"gang rank's provider {ev.provider_id} {view.status}", cancel_old=True
                )
        elif ev.attempts is not None:  # the daemon said what it holds: believe it
            view.attempts_seen_at = max(view.attempts_seen_at or ev.at, ev.at)
            await leases.reconcile(self, ev)
