"""A running job's state follows what its provider confirms (issue 19), through the real
scheduler (in-process app, real NATS, SQLite and PostgreSQL): a heartbeat that no longer lists
the attempt requeues it, an unconfirmed lease requeues it, and the scheduler ends a job past its
timeout itself."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from shared.contracts import AttemptRef, JobState, ProviderEvent, TaskDispatch
from shared.db import utcnow
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
