"""What the scheduler exports: the job pipeline, placement, retries, metering, consumer lag.

Counters and histograms are recorded after the unit of work commits (a rolled-back round
counts nothing); the gauges (jobs by state, consumer lag) are polled from the database and
JetStream every few seconds by :func:`poll_forever`, so every replica exports the same figures:
dashboards take ``max`` over replicas, never ``sum``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from prometheus_client import Counter, Gauge, Histogram

from shared.contracts import JobState
from shared.db import unit_of_work, utcnow
from shared.loops import every
from shared.metrics import dependency_up, poll_jetstream

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from scheduler.models import Job
    from shared.db import UnitOfWork

# A job waits from milliseconds (idle fleet) to hours (no GPU of its kind): buckets span both.
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
ROUND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

jobs_by_state = Gauge("dante_scheduler_jobs", "Jobs in the job store, by state.", ["state"])
queued_oldest_age = Gauge(
    "dante_scheduler_queued_oldest_age_seconds", "How long the longest-waiting queued job waited."
)
transitions = Counter(
    "dante_scheduler_job_transitions_total", "Job state transitions, by target state.", ["state"]
)
time_queued = Histogram(
    "dante_scheduler_job_queued_seconds",
    "Time an attempt waited in the queue before it was placed.",
    buckets=WAIT_BUCKETS,
)
time_to_running = Histogram(
    "dante_scheduler_job_time_to_running_seconds",
    "Time from submission to the provider reporting the job running.",
    buckets=WAIT_BUCKETS,
)
placements = Counter("dante_scheduler_placements_total", "Attempts placed on a provider.")
placement_round = Histogram(
    "dante_scheduler_placement_round_duration_seconds",
    "Duration of one placement round (deadline expiry, matching, dispatch commit).",
    buckets=ROUND_BUCKETS,
)
requeues = Counter(
    "dante_scheduler_requeues_total", "Attempts sent back to the queue, by cause.", ["cause"]
)
retries_exhausted = Counter(
    "dante_scheduler_retries_exhausted_total",
    "Jobs failed because retries ran out, by cause.",
    ["cause"],
)
stale_writes = Counter(
    "dante_scheduler_stale_job_writes_total",
    "Units of work refused because the job changed after they read it (applied again).",
    ["where"],
)
deadline_expiries = Counter(
    "dante_scheduler_dispatch_deadline_expired_total",
    "Dispatched attempts not reported running by their start deadline.",
)
gpu_seconds = Counter(
    "dante_scheduler_metered_gpu_seconds_total", "GPU-seconds metered for finished attempts."
)
task_seconds = Counter(
    "dante_scheduler_metered_task_seconds_total", "Wall seconds metered for finished attempts."
)
metered_cost = Counter(
    "dante_scheduler_metered_cost_micros_total",
    "Money metered for finished attempts, in millionths of the price currency (integers).",
)

CAUSES = ("deadline", "provider_lost", "provider_returned", "other")
# Every label value exists from the start at 0, so rate() and alerts see a series before the
# first event instead of "no data".
for _c in CAUSES:
    requeues.labels(_c)
    retries_exhausted.labels(_c)
for _s in JobState:
    transitions.labels(str(_s))


def cause_of(text: str) -> str:
    """A requeue's free-text cause as one of :data:`CAUSES` (a bounded label)."""
    t = text.lower()
    if "deadline" in t:
        return "deadline"
    if t.startswith("provider "):  # "provider <id> offline|draining|..."
        return "provider_lost"
    if "returned" in t or "reported by" in t:
        return "provider_returned"
    return "other"


def _seconds(a: datetime | None, b: datetime) -> float | None:
    return None if a is None else max(0.0, (b - a).total_seconds())


def on_transition(uow: UnitOfWork, job: Job, to: JobState, now: datetime, cause: str) -> None:
    """Call before the job's fields change: records after the commit, from the old values."""
    old, attempt = job.state, job.attempt
    # the queue wait of this attempt: since submission for the first, since the requeue after
    queued_since = job.created_at if attempt == 1 else job.updated_at
    created = job.created_at

    async def record() -> None:
        transitions.labels(str(to)).inc()
        if to == JobState.DISPATCHED:
            placements.inc()
            if (s := _seconds(queued_since, now)) is not None:
                time_queued.observe(s)
        elif to == JobState.RUNNING:
            if (s := _seconds(created, now)) is not None:
                time_to_running.observe(s)
        elif to == JobState.QUEUED and old != JobState.QUEUED:
            requeues.labels(cause_of(cause)).inc()
        elif to == JobState.FAILED and "retries exhausted" in cause:
            retries_exhausted.labels(cause_of(cause)).inc()

    uow.after_commit(record)


def on_usage(uow: UnitOfWork, gpu_secs: float, seconds: float, cost: float) -> None:
    """An attempt's metered usage, counted once its transaction commits."""

    async def count() -> None:
        gpu_seconds.inc(gpu_secs)
        task_seconds.inc(seconds)
        metered_cost.inc(round(cost * 1_000_000))

    uow.after_commit(count)


def on_deadline_expiries(uow: UnitOfWork, n: int) -> None:
    if n:

        async def count() -> None:
            deadline_expiries.inc(n)

        uow.after_commit(count)


class _Round:
    skipped = False

    def skip(self) -> None:
        """This replica did not run the round (another holds the placement lock)."""
        self.skipped = True


@asynccontextmanager
async def timed_round() -> AsyncIterator[_Round]:
    """Times a placement round including its commit (enter it before the unit of work)."""
    start, r = time.perf_counter(), _Round()
    try:
        yield r
    finally:
        if not r.skipped:
            placement_round.observe(time.perf_counter() - start)


async def refresh(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Jobs by state (every state, zero included, so a state that empties drops to 0)."""
    from scheduler.models import Job

    try:
        async with unit_of_work(sessions) as uow:
            rows = (
                await uow.session.execute(sa.select(Job.state, sa.func.count()).group_by(Job.state))
            ).all()
            oldest = (
                await uow.session.execute(
                    sa.select(sa.func.min(Job.updated_at)).where(Job.state == JobState.QUEUED)
                )
            ).scalar_one_or_none()
    except Exception:
        dependency_up.labels("database").set(0)
        raise
    dependency_up.labels("database").set(1)
    counts: dict[str, Any] = {str(r[0]): int(r[1]) for r in rows}
    for state in JobState:
        jobs_by_state.labels(str(state)).set(counts.get(str(state), 0))
    queued_oldest_age.set(_seconds(oldest, utcnow()) or 0.0)


STREAMS = ("JOBS", "TASKS", "STATUS", "EVENTS")


async def poll_forever(
    sessions: async_sessionmaker[AsyncSession], js: Any, stop: asyncio.Event, interval: float = 5.0
) -> None:
    async def tick() -> None:
        failed: Exception | None = None
        for poll in (lambda: refresh(sessions), lambda: poll_jetstream(js, STREAMS)):
            try:
                await poll()
            except Exception as exc:  # one dependency down must not hide the other's figures
                failed = failed or exc
        if failed is not None:
            raise failed

    await every("metrics", tick, interval, stop=stop)
