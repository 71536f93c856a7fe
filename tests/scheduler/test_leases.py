"""A running job's state follows what its provider confirms (issue 19), through the real
scheduler (in-process app, real NATS, SQLite and PostgreSQL): a heartbeat that no longer lists
the attempt requeues it, an unconfirmed lease requeues it, and the scheduler ends a job past its
timeout itself; the same through a batch's ``AttemptsHeld`` (issue 12), renewed in bulk."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from scheduler.models import Job, ProviderView
from shared.app import service_state
from shared.contracts import AttemptRef, AttemptsHeld, JobState, ProviderEvent, TaskDispatch
from shared.db import unit_of_work, utcnow
from shared.nats import publish
from tests.support.harness import Harness
from tests.support.scheduler import RTX, auth, events, job_in
from tests.support.wait import eventually_async


async def _beat(h: Harness, pid: str, *held: tuple[str, int], later: float = 0) -> None:
    """The registry's heartbeat event for ``pid``, saying which attempts its daemon holds, as
    sent ``later`` seconds from now."""
    ev = ProviderEvent(
        kind="heartbeat",
        provider_id=pid,
        status="online",
        at=utcnow() + timedelta(seconds=later),
        gpus=RTX,
        max_concurrent_tasks=2,
        attempts=[AttemptRef(job_id=j, attempt=a) for j, a in held],
    )  # type: ignore[arg-type]
    await publish(h.js, "providers.events.heartbeat", ev)


async def _task(h: Harness, job_id: str, attempt: int = 1) -> TaskDispatch:
    async def sent() -> TaskDispatch | None:
        return next((t for t in h.tasks if (t.job_id, t.attempt) == (job_id, attempt)), None)

    return await eventually_async(sent, what=f"task {job_id}:{attempt}")


async def test_a_heartbeat_that_no_longer_lists_a_running_attempt_requeues_it(
    scheduler_factory: Any, own_nats: str, mint_token: Callable[..., str]
) -> None:
    owner = str(uuid.uuid4())
    me = auth(mint_token, owner)
    async with (
        scheduler_factory(reconcile_grace_seconds=0, lease_seconds=600) as (_, client),
        Harness(own_nats, mint_token, auto_answer=False) as h,
    ):
        await h.announce("p-1", RTX, max_concurrent_tasks=2)
        kept, lost = await h.submit(owner, 1), await h.submit(owner, 1, max_retries=1)
        for job_id in (kept, lost):
            await h.report(await _task(h, job_id), JobState.RUNNING)
            await job_in(client, me, job_id, "running")
        # the daemon came back holding only one of them (and a job this scheduler never knew)
        await _beat(h, "p-1", (kept, 1), ("not-ours", 1))
        again = await job_in(client, me, lost, "queued", "dispatched")
        assert again["attempt"] == 2
        requeue = [e for e in await events(client, me, lost) if e["to"] == "queued"][-1]
        assert requeue["attempt"] == 1 and "no longer runs attempt 1" in requeue["cause"]
        await eventually_async(lambda: (lost, 1) in h.cancels, what="cancel of attempt 1")
        still = await job_in(client, me, kept, "running")
        assert still["attempt"] == 1 and (kept, 1) not in h.cancels
        # it still lists the requeued attempt: it is told to drop it, and nothing else changes
        await h.report(await _task(h, lost, 2), JobState.RUNNING)
        await job_in(client, me, lost, "running")
        await _beat(h, "p-1", (kept, 1), (lost, 1), (lost, 2))
        await eventually_async(lambda: h.cancels.count((lost, 1)) == 2, what="cancel resent")
        for job_id, attempt in ((kept, 1), (lost, 2)):
            now = await job_in(client, me, job_id, *JobState)
            assert (now["status"], now["attempt"]) == ("running", attempt)


async def test_an_unconfirmed_lease_requeues_and_a_job_past_its_timeout_is_ended(
    scheduler_factory: Any, own_nats: str, mint_token: Callable[..., str]
) -> None:
    owner = str(uuid.uuid4())
    me = auth(mint_token, owner)
    settings = {"lease_seconds": 60, "reconcile_grace_seconds": 600, "timeout_grace_seconds": 0}
    async with (
        scheduler_factory(**settings) as (_, client),
        Harness(own_nats, mint_token, auto_answer=False) as h,
    ):
        await h.announce("p-quiet", RTX, max_concurrent_tasks=2)
        silent = await h.submit(owner, 1, max_retries=1)
        slow = await h.submit(owner, 1, timeout_seconds=1)
        for job_id in (silent, slow):
            await h.report(await _task(h, job_id), JobState.RUNNING)
            await job_in(client, me, job_id, "running")
        # nobody confirms the slow job either, but its beats are not past its lease yet: it
        # runs on, until the scheduler's own timeout ends it
        ended = await job_in(client, me, slow, "timed_out")
        assert "exceeded its timeout of 1 s" in ended["error"]
        await eventually_async(lambda: (slow, 1) in h.cancels, what="the timed-out attempt killed")
        assert (await job_in(client, me, silent, *JobState))["status"] == "running"
        # the provider stays online and beats, but a beat past the lease does not list it
        await _beat(h, "p-quiet", later=61)
        again = await job_in(client, me, silent, "queued", "dispatched")
        assert again["attempt"] == 2
        evs = [e for e in await events(client, me, silent) if e["from"] != e["to"]]
        assert [(e["to"], e["attempt"]) for e in evs][:4] == [
            ("queued", 1),
            ("dispatched", 1),
            ("running", 1),
            ("queued", 1),
        ]
        assert "lease expired" in evs[3]["cause"]
        await eventually_async(lambda: (silent, 1) in h.cancels, what="cancel of attempt 1")


async def _held(h: Harness, held: dict[str, list[tuple[str, int]]], later: float = 0) -> datetime:
    """The registry's AttemptsHeld for a batch of beats (issue 12), as sent ``later`` seconds
    from now; returns its time."""
    at = utcnow() + timedelta(seconds=later)
    await publish(h.js, "providers.events.held", AttemptsHeld(at=at, held=held))
    return at


async def _lease_and_seen(app: Any, job_id: str) -> tuple[datetime | None, datetime | None]:
    """A job's lease and its provider's ``attempts_seen_at``, as stored."""
    sessions = service_state(app).sessions
    assert sessions is not None
    async with unit_of_work(sessions) as uow:
        job = await uow.session.get(Job, job_id)
        assert job is not None and job.provider_id is not None
        view = await uow.session.get(ProviderView, job.provider_id)
        assert view is not None
        return job.lease_expires_at, view.attempts_seen_at


async def test_a_batch_of_listings_renews_leases_in_bulk_and_an_unconfirmed_one_is_requeued(
    scheduler_factory: Any, own_nats: str, mint_token: Callable[..., str]
) -> None:
    """Two providers in one AttemptsHeld past the leases set at start: what each lists is
    renewed (and never requeued), what neither lists is requeued once its lease lapsed."""
    owner = str(uuid.uuid4())
    me = auth(mint_token, owner)
    settings = {"lease_seconds": 60, "reconcile_grace_seconds": 600}
    async with (
        scheduler_factory(**settings) as (app, client),
        Harness(own_nats, mint_token, auto_answer=False) as h,
    ):
        for pid in ("p-a", "p-b"):
            await h.announce(pid, RTX, max_concurrent_tasks=2)
        jobs = [await h.submit(owner, 1, max_retries=1) for _ in range(3)]
        where: dict[str, str] = {}
        for job_id in jobs:
            task = await _task(h, job_id)
            where[job_id] = task.provider_id
            await h.report(task, JobState.RUNNING)
            await job_in(client, me, job_id, "running")
        silent, kept = jobs[0], jobs[1:]
        held: dict[str, list[tuple[str, int]]] = {"p-a": [], "p-b": []}
        for job_id in kept:
            held[where[job_id]].append((job_id, 1))
        at = await _held(h, held, later=61)
        again = await job_in(client, me, silent, "queued", "dispatched")
        assert again["attempt"] == 2
        evs = [e for e in await events(client, me, silent) if e["to"] == "queued"]
        assert "lease expired" in evs[-1]["cause"]
        for job_id in kept:  # renewed in the transaction that moved attempts_seen_at
            now = await job_in(client, me, job_id, *JobState)
            assert (now["status"], now["attempt"]) == ("running", 1)
            lease, seen = await _lease_and_seen(app, job_id)
            assert seen == at and lease == at + timedelta(seconds=60)
        # listed again a little later: the lease has more than half its time left, so nothing
        # is written, and a listing past that still finds it confirmed
        await _held(h, held, later=70)
        last = await _held(h, held, later=100)
        for job_id in kept:

            async def renewed(job_id: str = job_id) -> datetime | None:
                lease, _ = await _lease_and_seen(app, job_id)
                return lease if lease and lease > at + timedelta(seconds=60) else None

            assert await eventually_async(renewed, what=f"{job_id} renewed") == last + timedelta(
                seconds=60
            )
            now = await job_in(client, me, job_id, *JobState)
            assert (now["status"], now["attempt"]) == ("running", 1)
        assert all((job_id, 1) not in h.cancels for job_id in kept)


async def test_a_batch_is_reconciled_per_provider_and_stale_or_unknown_listings_change_nothing(
    scheduler_factory: Any, own_nats: str, mint_token: Callable[..., str]
) -> None:
    owner = str(uuid.uuid4())
    me = auth(mint_token, owner)
    async with (
        scheduler_factory(reconcile_grace_seconds=0, lease_seconds=600) as (app, client),
        Harness(own_nats, mint_token, auto_answer=False) as h,
    ):
        for pid in ("p-1", "p-2"):
            await h.announce(pid, RTX[:1], max_concurrent_tasks=1)
        x, y = await h.submit(owner, 1), await h.submit(owner, 1, max_retries=1)
        where: dict[str, str] = {}
        for job_id in (x, y):
            task = await _task(h, job_id)
            where[job_id] = task.provider_id
            await h.report(task, JobState.RUNNING)
            await job_in(client, me, job_id, "running")
        assert where[x] != where[y]
        lease_before, _ = await _lease_and_seen(app, x)
        # an hour old: older than what the scheduler heard of x's provider, so it is skipped
        await _held(h, {where[x]: []}, later=-3600)
        # y's provider no longer lists it; a provider the scheduler never heard of is ignored
        await _held(h, {where[y]: [], "p-unknown": [("not-ours", 1)]})
        again = await job_in(client, me, y, "queued", "dispatched")
        assert again["attempt"] == 2
        requeue = [e for e in await events(client, me, y) if e["to"] == "queued"][-1]
        assert "no longer runs attempt 1 (reconciled)" in requeue["cause"]
        await eventually_async(lambda: (y, 1) in h.cancels, what="cancel of attempt 1")
        # the stale listing came first and changed nothing
        now = await job_in(client, me, x, *JobState)
        assert (now["status"], now["attempt"]) == ("running", 1)
        assert await _lease_and_seen(app, x) == (lease_before, None)
        # x's provider lists y's old attempt as well: it is told to drop it, x stays
        await _held(h, {where[x]: [(x, 1), (y, 1)]})
        await eventually_async(lambda: h.cancels.count((y, 1)) == 2, what="cancel resent")
        now = await job_in(client, me, x, *JobState)
        assert (now["status"], now["attempt"]) == ("running", 1)
        assert (x, 1) not in h.cancels
