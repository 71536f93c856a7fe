"""Placement honours a job's CPUs, memory and need for a Docker engine, through the real
scheduler (in-process app, real NATS, SQLite and PostgreSQL) fed registry events as a daemon's
registration produces them."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from scheduler.models import ProviderView
from shared.app import service_state
from tests.support.harness import Harness
from tests.support.scheduler import auth, events, job_in
from tests.support.wait import eventually_async


async def known(app: Any, *provider_ids: str) -> None:
    """Wait until the scheduler's provider view holds every one of ``provider_ids``."""
    sessions = service_state(app).sessions
    assert sessions is not None

    async def all_known() -> bool | None:
        async with sessions() as session:
            ids = set((await session.execute(sa.select(ProviderView.id))).scalars())
        return set(provider_ids) <= ids or None

    await eventually_async(all_known, what=f"providers {provider_ids} known")


async def test_cpu_memory_and_docker_decide_where_a_job_goes_or_that_it_never_can(
    scheduler_factory: Any, own_nats: str, mint_token: Callable[..., str]
) -> None:
    owner = str(uuid.uuid4())
    me = auth(mint_token, owner)
    async with (
        scheduler_factory(dispatch_timeout_seconds=600) as (app, client),
        Harness(own_nats, mint_token, auto_answer=False) as h,
    ):
        await h.announce("p-big", [], cpu_count=16, memory_mb=24000, max_concurrent_tasks=8)
        await h.announce(
            "p-docker", [], cpu_count=2, memory_mb=4000, docker=True, max_concurrent_tasks=8
        )
        await known(app, "p-big", "p-docker")
        # never: more memory / CPUs than any host has, or both on one host
        huge = await h.submit(owner, 0, resources={"memory_mb": 10_000_000})
        failed = await job_in(client, me, huge, "failed")
        assert failed["error"] == "no provider offers 10000000 MB memory (largest: 24000 MB)"
        many = await h.submit(owner, 0, resources={"cpu": 64, "memory_mb": 30000})
        failed = await job_in(client, me, many, "failed")
        assert failed["error"] == (
            "no provider offers 64 CPUs (largest: 16); 30000 MB memory (largest: 24000 MB)"
        )
        odd = await h.submit(owner, 0, job_type="container", resources={"memory_mb": 8000})
        failed = await job_in(client, me, odd, "failed")
        assert failed["error"] == (
            "no single provider offers all of: a task slot, 8000 MB memory, a Docker engine"
        )
        # a container job goes only where Docker answers, even to the smaller host
        boxed = await h.submit(owner, 0, job_type="container")
        placed = await job_in(client, me, boxed, "dispatched")
        assert placed["provider_id"] == "p-docker"
        # memory is held while an attempt is active: two 16 GB jobs do not share 24 GB
        first = await h.submit(owner, 0, resources={"memory_mb": 16000, "cpu": 4})
        assert (await job_in(client, me, first, "dispatched"))["provider_id"] == "p-big"
        second = await h.submit(owner, 0, resources={"memory_mb": 16000})

        async def waits() -> list[dict] | None:
            evs = await events(client, me, second)
            return [e for e in evs if "none free now" in e["cause"]] or None

        (note,) = await eventually_async(waits)
        assert "16000 MB memory" in note["cause"]
        assert (await job_in(client, me, second, "queued"))["provider_id"] is None
        task = next(t for t in h.tasks if t.job_id == first)
        await h.report(task, "running")
        await h.report(task, "completed", exit_code=0)
        assert (await job_in(client, me, second, "dispatched"))["provider_id"] == "p-big"
