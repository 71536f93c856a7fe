"""Starting an attempt is the scheduler's decision (issue 19, ``scheduler/confirm.py``), through
the real scheduler (in-process app, real NATS, SQLite and PostgreSQL): only the current attempt,
on the provider it was placed on, hears yes; the yes and the move to ``running`` are one commit;
a requeued attempt hears no."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from shared.contracts import (
    JobState,
    ProviderEvent,
    StartAnswer,
    StartRequest,
    TaskDispatch,
    start_subject,
)
from shared.db import utcnow
from shared.nats import publish
from tests.support.harness import Harness
from tests.support.scheduler import RTX, auth, job_in
from tests.support.wait import eventually_async


async def ask(h: Harness, provider_id: str, job_id: str, attempt: int) -> StartAnswer:
    req = StartRequest(job_id=job_id, attempt=attempt)
    reply = await h.nc.request(
        start_subject(provider_id), req.model_dump_json().encode(), timeout=30
    )
    return StartAnswer.model_validate_json(reply.data)


async def task_of(h: Harness, job_id: str, attempt: int) -> TaskDispatch:
    async def sent() -> TaskDispatch | None:
        return next((t for t in h.tasks if (t.job_id, t.attempt) == (job_id, attempt)), None)

    return await eventually_async(sent, what=f"task {job_id}:{attempt}")


async def go_offline(h: Harness, provider_id: str) -> None:
    """The registry's word that the provider is gone (its jobs are requeued)."""
    ev = ProviderEvent(kind="offline", provider_id=provider_id, status="offline", at=utcnow())
    await publish(h.js, "providers.events.offline", ev)


async def placed_on_p1(h: Harness, owner: str) -> str:
    """A job placed on p-1 (its task taken, not started), with p-2 where attempt 2 can go."""
    await h.announce("p-1", RTX, max_concurrent_tasks=2)
    job_id = await h.submit(owner, 1, max_retries=2)
    await task_of(h, job_id, 1)
    await h.announce("p-2", RTX, max_concurrent_tasks=2)
    return job_id


async def test_only_the_current_attempt_on_its_own_provider_may_start(
    scheduler_factory: Any, own_nats: str, mint_token: Callable[..., str]
) -> None:
    owner = str(uuid.uuid4())
    me = auth(mint_token, owner)
    async with (
        scheduler_factory() as (_, client),
        Harness(own_nats, mint_token, auto_answer=False) as h,
    ):
        job_id = await placed_on_p1(h, owner)

        assert (await ask(h, "p-2", job_id, 1)).start is False  # not placed there
        assert (await ask(h, "p-1", "no-such-job", 1)).start is False
        yes = await ask(h, "p-1", job_id, 1)
        assert yes.start and yes.recorded
        # committed before the answer: the job is running the moment the daemon hears yes
        now = (await client.get(f"/api/v1/jobs/{job_id}", headers=me)).json()
        assert now["status"] == JobState.RUNNING
        assert await ask(h, "p-1", job_id, 1) == yes  # a lost answer, asked again

        await go_offline(h, "p-1")
        again = await job_in(client, me, job_id, "queued", "dispatched")
        assert again["attempt"] == 2
        no = await ask(h, "p-1", job_id, 1)
        assert not no.start and "superseded" in (no.reason or "")


async def test_a_dispatched_attempt_requeued_before_it_asked_never_hears_yes(
    scheduler_factory: Any, own_nats: str, mint_token: Callable[..., str]
) -> None:
    """The fetch-vs-delete race: the task was taken from TASKS, then its attempt requeued
    (its provider was called offline) before the daemon asked."""
    owner = str(uuid.uuid4())
    me = auth(mint_token, owner)
    async with (
        scheduler_factory() as (_, client),
        Harness(own_nats, mint_token, auto_answer=False) as h,
    ):
        job_id = await placed_on_p1(h, owner)
        await go_offline(h, "p-1")
        second = await task_of(h, job_id, 2)

        assert (await ask(h, "p-1", job_id, 1)).start is False
        assert (await job_in(client, me, job_id, "dispatched"))["attempt"] == 2
        assert (await ask(h, second.provider_id, job_id, 2)).start is True
        await job_in(client, me, job_id, "running")
