"""What keeps a job's state true to what really runs (issue 19): reconciling with the attempts a
daemon says it holds, leases on running attempts, the scheduler's own timeout, and removing a
superseded attempt's task message before any daemon can take it.

Every state change goes through :meth:`SchedulerService.transition` like everywhere else.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import Counter

from scheduler.models import Job
from shared.contracts import JobState, ProviderEvent, task_subject
from shared.db import utcnow

if TYPE_CHECKING:
    from scheduler.service import SchedulerService

log = structlog.get_logger(__name__)

requeued = Counter(
    "dante_scheduler_attempts_reclaimed_total",
    "Running attempts taken back because their provider no longer confirmed them, by how: "
    "reconciled (a heartbeat did not list it), lease (no heartbeat listed it in time), "
    "timeout (past timeout_seconds + grace).",
    ["how"],
)
tasks_removed = Counter(
    "dante_scheduler_task_messages_removed_total",
    "Dispatch messages of superseded attempts deleted from TASKS before a daemon took them.",
)

MAX_SCAN = 1000  # messages looked at per removal: a provider's own backlog, never the stream


async def reconcile(svc: SchedulerService, ev: ProviderEvent) -> None:
    """The provider's daemon listed what it holds (``ev.attempts``): a running attempt placed
    there that it does not list is requeued (the daemon restarted, or lost it); one it lists
    gets its lease renewed; one it holds that is no longer that job's attempt there is told to
    stop. A dispatched attempt it does not list is left to its start deadline: its task may
    simply not be taken yet."""
    assert ev.attempts is not None
    held = {(a.job_id, a.attempt) for a in ev.attempts}
    s = svc.settings
    settled = ev.at - timedelta(seconds=s.reconcile_grace_seconds)
    for job in await svc.jobs.active_on(ev.provider_id):
        if (job.id, job.attempt) in held:
            if job.state == JobState.RUNNING:
                job.lease_expires_at = ev.at + timedelta(seconds=s.lease_seconds)
            continue
        if job.state != JobState.RUNNING or job.started_at is None or job.started_at >= settled:
            continue
        requeued.labels("reconciled").inc()
        await svc._requeue_or_fail(
            job,
            f"provider {ev.provider_id} no longer runs attempt {job.attempt} (reconciled)",
            cancel_old=True,
        )
    by_job: dict[str, list[int]] = {}
    for job_id, attempt in held:
        by_job.setdefault(job_id, []).append(attempt)
    for job in await svc.jobs.many(sorted(by_job)):  # jobs this scheduler does not know: none
        # a gang's ranks (issue 17) run the same attempt on other providers than rank 0's
        ranks = {r["provider_id"] for r in job.gang or []} | {job.provider_id}
        for attempt in by_job[job.id]:
            if attempt != job.attempt or ev.provider_id not in ranks:
                log.warning("attempt.superseded", job_id=job.id, attempt=attempt)
                svc._cancel_after_commit(job, ev.provider_id, attempt)


async def expire_leases(svc: SchedulerService, limit: int) -> int:
    """Running attempts whose lease ran out before a heartbeat that listed what the provider
    holds, without being in it, go back to the queue. Driven by heartbeats the scheduler has
    read, not by its clock alone: while it lags behind the events (or its database was away)
    no lease lapses unseen, and a silent provider is the registry's sweep to call offline."""
    expired = await svc.jobs.lease_lapsed(limit)
    for job in expired:
        requeued.labels("lease").inc()
        await svc._requeue_or_fail(
            job,
            f"provider {job.provider_id} stopped confirming attempt {job.attempt} (lease expired)",
            cancel_old=True,
        )
    return len(expired)


async def expire_timeouts(svc: SchedulerService, limit: int, reports_pending: bool) -> int:
    """Running jobs past ``timeout_seconds`` + grace end ``timed_out`` and the provider is told
    to kill the attempt: the daemon enforces the timeout too, this covers one that never says.
    While status reports wait unread (the job's own end may be among them) only jobs a whole
    extra grace late are ended."""
    cutoff = utcnow()
    if reports_pending:
        cutoff -= timedelta(seconds=svc.settings.timeout_grace_seconds)
    expired = await svc.jobs.running_past(Job.run_deadline, cutoff, limit)
    for job in expired:
        requeued.labels("timeout").inc()
        provider_id, attempt = job.provider_id, job.attempt
        job.error = (
            f"exceeded its timeout of {job.timeout_seconds} s by "
            f"{svc.settings.timeout_grace_seconds:g} s without a report from its provider"
        )
        await svc.transition(job, JobState.TIMED_OUT, job.error)
        if provider_id:
            svc._cancel_after_commit(job, provider_id, attempt)
    return len(expired)


async def remove_dispatch(
    js: JetStreamContext, provider_id: str, job_id: str, attempt: int
) -> bool:
    """Delete an attempt's task message from TASKS if no daemon has acked it yet, so a daemon
    that (re)starts later can never take and start it (a cancel published behind it would come
    too late: the user's code would already have run). True if one was removed."""
    subject, wanted = task_subject(provider_id), f"{job_id}:{attempt}"
    seq = 1
    for _ in range(MAX_SCAN):
        try:
            msg = await js.get_msg("TASKS", seq=seq, subject=subject, next=True)
        except NotFoundError:
            return False
        if msg.seq is None:
            return False
        if (msg.headers or {}).get("Nats-Msg-Id") == wanted:
            await js.delete_msg("TASKS", msg.seq)
            tasks_removed.inc()
            log.info("task.message_removed", job_id=job_id, attempt=attempt, seq=msg.seq)
            return True
        seq = msg.seq + 1
    return False
