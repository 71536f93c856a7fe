"""What keeps a job's state true to what really runs (issue 19): reconciling with the attempts a
daemon says it holds, leases on running attempts, the scheduler's own timeout, and removing a
superseded attempt's task message before any daemon can take it.

Every state change goes through :meth:`SchedulerService.transition` like everywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, cast

import sqlalchemy as sa
import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import Counter
from pydantic import Field, RootModel
from sqlalchemy.orm.attributes import set_committed_value

from scheduler.models import Job, ProviderView
from scheduler.repository import ACTIVE
from shared.contracts import AttemptsHeld, JobState, ProviderEvent, task_subject
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

jobs_t = cast(sa.Table, Job.__table__)
views_t = cast(sa.Table, ProviderView.__table__)

# Built once (statement construction was ~20 % of a batch's CPU), expanding lists bound per call
_at = sa.bindparam("b_at", type_=views_t.c.last_seen_at.type)
_SEEN = (
    sa.update(views_t)
    .where(
        views_t.c.id.in_(sa.bindparam("b_ids", expanding=True)),
        views_t.c.status == "online",
        views_t.c.last_seen_at <= _at,
    )
    .values(last_seen_at=_at, attempts_seen_at=_at)
    .returning(views_t.c.id)
)
_jobs = jobs_t.c
_PLACED = sa.select(
    _jobs.id,
    _jobs.attempt,
    _jobs.provider_id,
    _jobs.state == JobState.RUNNING,
    sa.and_(_jobs.started_at.is_not(None), _jobs.started_at < sa.bindparam("b_settled")),
    sa.or_(_jobs.lease_expires_at.is_(None), _jobs.lease_expires_at < sa.bindparam("b_half")),
).where(
    _jobs.provider_id.in_(sa.bindparam("b_providers", expanding=True)),
    _jobs.state.in_(ACTIVE),
)
_until = sa.bindparam("b_until", type_=_jobs.lease_expires_at.type)
_RENEW = (
    sa.update(jobs_t)
    .where(
        _jobs.id.in_(sa.bindparam("b_ids", expanding=True)),
        _jobs.provider_id.in_(sa.bindparam("b_providers", expanding=True)),
        _jobs.state == JobState.RUNNING,
        sa.or_(_jobs.lease_expires_at.is_(None), _jobs.lease_expires_at < _until),
    )
    .values(lease_expires_at=_until)
)

MAX_SCAN = 1000  # messages looked at per removal: a provider's own backlog, never the stream


class ProviderMessage(
    RootModel[Annotated[ProviderEvent | AttemptsHeld, Field(discriminator="kind")]]
):
    """Whatever the registry publishes on ``providers.events.*``: a :class:`ProviderEvent`, or
    the :class:`AttemptsHeld` of a batch of heartbeats (``providers.events.held``)."""


async def on_provider_message(svc: SchedulerService, msg: ProviderEvent | AttemptsHeld) -> None:
    if isinstance(msg, AttemptsHeld):
        await confirm_held(svc, msg)
    else:
        await svc.on_provider_event(msg)


def frees_capacity(msg: ProviderEvent | AttemptsHeld) -> bool:
    """Worth waking placement for: anything but a heartbeat (a requeue a listing causes is
    placed by the next round, as before)."""
    return msg.kind not in ("heartbeat", "held")


async def reconcile(svc: SchedulerService, ev: ProviderEvent) -> None:
    """The provider's daemon listed what it holds (``ev.attempts``); its view was brought up
    to date by the caller. See :func:`_reconcile`."""
    assert ev.attempts is not None
    await _reconcile(svc, ev.at, {ev.provider_id: [(a.job_id, a.attempt) for a in ev.attempts]})


async def confirm_held(svc: SchedulerService, msg: AttemptsHeld) -> None:
    """A batch of heartbeats' listings (issue 12), applied as the same listings sent one event
    each would be: for each provider that is online in this scheduler's view and has heard
    nothing newer (``last_seen_at``), the listing time becomes its ``attempts_seen_at`` and its
    attempts are reconciled. A provider that is unknown, offline or already past ``at`` is
    skipped: neither renewed nor counted as listed, so nothing is requeued on its behalf."""
    if not msg.held:
        return
    session = svc.uow.session
    await session.flush()  # Core statements below: what the batch changed so far goes first
    done = await session.execute(_SEEN, {"b_ids": list(msg.held), "b_at": msg.at})
    seen = [r[0] for r in done]
    _loaded_views_seen(svc, seen, msg.at)
    await _reconcile(svc, msg.at, {pid: msg.held[pid] for pid in seen})


def _loaded_views_seen(svc: SchedulerService, ids: list[str], at: datetime) -> None:
    """Views this unit of work already holds (an earlier event of the batch) take the times
    just written, so a later event of the batch compares against them."""
    seen = set(ids)
    for obj in list(svc.uow.session.identity_map.values()):
        if isinstance(obj, ProviderView) and obj.id in seen:
            set_committed_value(obj, "last_seen_at", at)
            set_committed_value(obj, "attempts_seen_at", at)


async def _reconcile(
    svc: SchedulerService, at: datetime, held: Mapping[str, Sequence[tuple[str, int]]]
) -> None:
    """Providers' daemons listed what they hold at ``at`` (provider id → ``(job_id, attempt)``
    pairs): a running attempt placed there that its provider does not list is requeued (the
    daemon restarted, or lost it); one it lists keeps a lease of at least half
    ``lease_seconds`` past ``at`` (renewed to the whole of it, in one UPDATE for all, when
    less is left: most listings then write nothing); one it holds that is no longer that job's
    attempt there is told to stop. A dispatched attempt it does not list is left to its start
    deadline: its task may simply not be taken yet. Rows are read without a lock (their times
    compared in SQL: no datetime parsed per row); only the jobs requeued are locked, and
    checked again."""
    session = svc.uow.session
    await session.flush()
    listed = {pid: set(pairs) for pid, pairs in held.items()}
    s = svc.settings
    settled = at - timedelta(seconds=s.reconcile_grace_seconds)
    until = at + timedelta(seconds=s.lease_seconds)
    half = at + timedelta(seconds=s.lease_seconds / 2)
    params = {"b_providers": list(listed), "b_settled": settled, "b_half": half}
    placed = await session.execute(_PLACED, params)
    renew: dict[str, str] = {}  # job id -> provider id
    lost: dict[str, tuple[int, str]] = {}
    here: set[tuple[str, int, str]] = set()
    for job_id, attempt, pid, running, started_before, due in placed:
        here.add((job_id, attempt, pid))
        if (job_id, attempt) in listed[pid]:
            if running and due:
                renew[job_id] = pid
        elif running and started_before:
            lost[job_id] = (attempt, pid)
    if renew:
        await _renew(svc, list(renew), sorted(set(renew.values())), until)
    if lost:
        await _requeue_lost(svc, lost, listed, settled)
    elsewhere: dict[str, list[tuple[str, int]]] = {}
    for pid, pairs in listed.items():
        for job_id, attempt in pairs:
            if (job_id, attempt, pid) not in here:
                elsewhere.setdefault(job_id, []).append((pid, attempt))
    for job in await svc.jobs.many(sorted(elsewhere)):  # jobs this scheduler does not know: none
        # a gang's ranks (issue 17) run the same attempt on other providers than rank 0's
        ranks = {r["provider_id"] for r in job.gang or []} | {job.provider_id}
        for pid, attempt in elsewhere[job.id]:
            if attempt != job.attempt or pid not in ranks:
                log.warning("attempt.superseded", job_id=job.id, attempt=attempt)
                svc._cancel_after_commit(job, pid, attempt)


async def _renew(
    svc: SchedulerService, ids: list[str], providers: list[str], until: datetime
) -> None:
    """Leases of listed running attempts extended to ``until`` in one UPDATE, which checks
    again that each still runs on a provider that listed it. An attempt that replaced the
    listed one since the read (requeued and started again) is not extended either: it started
    after the listing, so its own lease already runs past ``until``."""
    await svc.uow.session.execute(
        _RENEW, {"b_ids": ids, "b_providers": providers, "b_until": until}
    )


async def _requeue_lost(
    svc: SchedulerService,
    lost: dict[str, tuple[int, str]],
    listed: dict[str, set[tuple[str, int]]],
    settled: datetime,
) -> None:
    """Requeue the running attempts their providers no longer list, locked (in id order: two
    replicas never deadlock) and checked again: one that moved since the read is left alone."""
    stmt = sa.select(Job).where(Job.id.in_(sorted(lost))).order_by(Job.id).with_for_update()
    for job in (await svc.uow.session.execute(stmt)).scalars():
        attempt, pid = lost[job.id]
        if (
            job.state != JobState.RUNNING
            or (job.attempt, job.provider_id) != (attempt, pid)
            or (job.id, attempt) in listed[pid]
            or job.started_at is None
            or job.started_at >= settled
        ):
            continue
        requeued.labels("reconciled").inc()
        await svc._requeue_or_fail(
            job, f"provider {pid} no longer runs attempt {attempt} (reconciled)", cancel_old=True
        )


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
