"""Starting an attempt is the scheduler's decision (issue 19): a daemon asks just before it
starts a task (``attempts.start.<provider_id>``, request/reply) and starts only on a yes.

Why: a requeued attempt's task message is deleted from TASKS, but a daemon may have fetched it
a moment before; without this check it would start the old attempt and be told to kill it
milliseconds later (the user's code ran twice). Here the answer and the move to ``running``
are one transaction, committed before the reply: once a daemon hears yes, no deadline sweep can
requeue the attempt as "never started"; once the attempt is requeued, every later ask hears no.

Requests are answered in batches (one unit of work for what has arrived meanwhile), like the
consumers in ``scheduler/workers.py``. No answer (the database away, a replica stopping) is safe:
the daemon asks again later, and its start deadline still bounds the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy.orm.exc import StaleDataError

from scheduler.models import Job
from scheduler.service import SchedulerService
from shared.contracts import ANY, JobState, StartAnswer, StartRequest, start_subject
from shared.db import utcnow

log = structlog.get_logger(__name__)

QUEUE_GROUP = "scheduler"  # one replica answers each request
BATCH = 256
STALE_TRIES = 3

answers = Counter(
    "dante_scheduler_start_answers_total",
    "Daemons' requests to start an attempt, by answer (yes, or why not).",
    ["answer"],
)


def _no(reason: str, label: str) -> StartAnswer:
    answers.labels(label).inc()
    return StartAnswer(start=False, reason=reason)


async def decide(
    svc: SchedulerService, provider_id: str, req: StartRequest, job: Job | None
) -> StartAnswer:
    """May ``provider_id`` start ``req``'s attempt now? A plain job that may is moved to
    ``running`` here (the caller commits before it answers)."""
    if job is None:
        return _no("the scheduler does not know this job", "unknown_job")
    if req.attempt != job.attempt:
        return _no(f"attempt {req.attempt} was superseded by attempt {job.attempt}", "superseded")
    if job.gang:  # issue 17: each rank asks for itself; the job runs once every rank does
        owner = next((r["provider_id"] for r in job.gang if r["rank"] == req.rank), None)
        if owner != provider_id:
            return _no(f"rank {req.rank} is not placed on this provider", "other_provider")
        if job.state not in (JobState.DISPATCHED, JobState.RUNNING):
            return _no(f"the job is {job.state}", "not_startable")
        answers.labels("yes").inc()
        return StartAnswer(start=True)
    if job.provider_id != provider_id:
        return _no("the attempt is placed on another provider", "other_provider")
    if job.state == JobState.RUNNING:  # asked again (our earlier yes was lost on the way)
        answers.labels("yes").inc()
        return StartAnswer(start=True, recorded=True)
    if job.state != JobState.DISPATCHED:
        return _no(f"the job is {job.state}", "not_startable")
    if job.start_deadline is not None and job.start_deadline < utcnow():
        # the deadline sweep requeues it (and deletes the task) on its next round
        return _no("the attempt is past its start deadline", "past_deadline")
    await svc.transition(job, JobState.RUNNING, f"started by provider {provider_id}")
    answers.labels("yes").inc()
    return StartAnswer(start=True, recorded=True)


Unit = Callable[[], AbstractAsyncContextManager[SchedulerService]]


async def answer_batch(
    unit: Unit, batch: list[tuple[str, StartRequest]]
) -> list[StartAnswer] | None:
    """Decide a batch in one unit of work; None if it could not be committed (no answers)."""
    for _ in range(STALE_TRIES):
        try:
            async with unit() as svc:
                locked = await svc.jobs.lock_many([r.job_id for _, r in batch])
                return [await decide(svc, p, r, locked.get(r.job_id)) for p, r in batch]
        except StaleDataError:
            log.info("start.changed_concurrently")  # moved under us: decide again, afresh
    return None


async def serve(nc: NATS, unit: Unit, stop: asyncio.Event) -> None:
    """Answer start requests until ``stop``: what arrived meanwhile is decided together."""
    inbox: asyncio.Queue[Msg] = asyncio.Queue()

    async def received(msg: Msg) -> None:
        inbox.put_nowait(msg)

    sub = await nc.subscribe(start_subject(ANY), queue=QUEUE_GROUP, cb=received)
    try:
        async for msgs in _batches(inbox, stop):
            await _answer(unit, msgs)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def _batches(inbox: asyncio.Queue[Msg], stop: asyncio.Event) -> AsyncIterator[list[Msg]]:
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            getting = asyncio.ensure_future(inbox.get())
            await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not getting.done():
                getting.cancel()
                return
            msgs = [getting.result()]
            while len(msgs) < BATCH and not inbox.empty():
                msgs.append(inbox.get_nowait())
            yield msgs
    finally:
        stopping.cancel()


async def _answer(unit: Unit, msgs: list[Msg]) -> None:
    batch: list[tuple[str, StartRequest]] = []
    asked: list[Msg] = []
    for msg in msgs:
        try:
            req = StartRequest.model_validate_json(msg.data)
        except ValidationError:
            await _reply(msg, _no("not a StartRequest", "invalid"))
            continue
        batch.append((msg.subject.rsplit(".", 1)[-1], req))  # the subject names the asker
        asked.append(msg)
    if not batch:
        return
    try:
        got = await answer_batch(unit, batch)
    except Exception as exc:  # the database is away: no answer, the daemons ask again
        log.warning("start.unanswered", requests=len(batch), error=str(exc))
        return
    if got is None:
        log.warning("start.unanswered", requests=len(batch), error="kept changing")
        return
    for msg, (provider_id, req), ans in zip(asked, batch, got, strict=True):
        if not ans.start:
            log.info(
                "start.refused",
                job_id=req.job_id,
                attempt=req.attempt,
                provider_id=provider_id,
                reason=ans.reason,
            )
        await _reply(msg, ans)


async def _reply(msg: Msg, answer: StartAnswer) -> None:
    with contextlib.suppress(Exception):  # the asker gave up waiting: it asks again
        await msg.respond(answer.model_dump_json().encode())
