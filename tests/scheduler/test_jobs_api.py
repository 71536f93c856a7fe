"""The job store and API through the real scheduler (in-process app, real NATS, SQLite and
PostgreSQL): list filters, constraints, why a job waits, refused status, the start deadline."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY

from shared.contracts import JobState
from tests.support.harness import Harness
from tests.support.scheduler import H100, RTX, auth, events, job_in
from tests.support.wait import eventually_async


def rejected(reason: str) -> float:
    """Status reports the scheduler refused for ``reason`` so far (its Prometheus counter)."""
    got = REGISTRY.get_sample_value("dante_scheduler_status_rejected_total", {"reason": reason})
    return got or 0.0


async def test_list_filters_by_state_tag_and_time_with_a_cursor(
    scheduler_factory: Any, own_nats: str, mint_token: Callable[..., str]
) -> None:
    owner, other = str(uuid.uuid4()), str(uuid.uuid4())
    me = auth(mint_token, owner)
    async with scheduler_factory() as (_, client), Harness(own_nats, mint_token) as h:
        ids = []
        for i in range(7):
            ids.append(await h.submit(owner, 0, tags=["even"] if i % 2 == 0 else ["odd"]))
            await asyncio.sleep(0.01)  # distinct creation times
        await h.submit(other, 0, tags=["even"])

        async def listed() -> list[dict] | None:
            r = await client.get("/api/v1/jobs", params={"limit": 100}, headers=me)
            return r.json()["jobs"] if len(r.json()["jobs"]) == 7 else None

        jobs = await eventually_async(listed)
        assert [j["job_id"] for j in jobs] == ids[::-1]  # newest first, only mine

        seen, cursor = [], None
        while True:
            params = {"tag": "even", "state": "queued", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/api/v1/jobs", params=params, headers=me)).json()
            seen += [j["job_id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == [ids[i] for i in (6, 4, 2, 0)]

        created = {j["job_id"]: j["created_at"] for j in jobs}
        window = {"created_after": created[ids[2]], "created_before": created[ids[5]]}
        got = (await client.get("/api/v1/jobs", params=window, headers=me)).json()["jobs"]
        assert [j["job_id"] for j in got] == [ids[4], ids[3], ids[2]]
        none = await client.get("/api/v1/jobs", params={"state": "running"}, headers=me)
        assert none.json()["jobs"] == []
        bad = await client.get("/api/v1/jobs", params={"cursor": "%%%"}, headers=me)
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_cursor"


async def test_constraints_waiting_reasons_and_refused_status(
    scheduler_factory: Any, own_nats: str, mint_token: Callable[..., str]
) -> None:
    owner = str(uuid.uuid4())
    me = auth(mint_token, owner)
    async with (
        scheduler_factory(dispatch_timeout_seconds=600) as (_, client),
        Harness(own_nats, mint_token, auto_answer=False) as h,
    ):
        await h.announce("p-h100", H100, price_per_hour=3.0, labels={"region": "us"})
        await h.announce(
            "p-rtx", RTX, price_per_hour=0.5, labels={"region": "eu"}, max_concurrent_tasks=2
        )
        # Never satisfiable: the only compute-9.0 GPU costs more than the cap.
        never = await h.submit(
            owner,
            1,
            max_price_per_hour=1.0,
            resources={"gpu_count": 1, "min_compute_capability": "9.0"},
        )
        failed = await job_in(client, me, never, "failed")
        # which resource it names depends on whether p-rtx was known yet: either way, the price
        assert failed["error"].startswith("no ") and "price <= 1.0/h" in failed["error"]

        cheap = await h.submit(owner, 1, max_price_per_hour=1.0)
        placed = await job_in(client, me, cheap, "dispatched")
        assert placed["provider_id"] == "p-rtx" and placed["price_per_hour"] == 0.5

        us = await h.submit(
            owner, 1, labels={"region": "us"}, resources={"gpu_count": 1, "gpu_model": "*H100*"}
        )
        first = await job_in(client, me, us, "dispatched")
        assert first["provider_id"] == "p-h100" and first["gpu_indices"] == [0]
        assert first["gpu_model"] == "NVIDIA H100 80GB" and first["start_deadline"]

        waiting = await h.submit(
            owner, 1, resources={"gpu_count": 1, "min_compute_capability": "9.0"}
        )

        await job_in(client, me, waiting, "queued")

        async def says_why() -> list[dict] | None:
            evs = await events(client, me, waiting)
            return [e for e in evs if e["cause"].startswith("waiting")] or None

        why = await eventually_async(says_why)
        assert len(why) == 1, why  # said once, not once per placement round
        assert "1 matching live provider(s), none free now" in why[0]["cause"]
        job = (await client.get(f"/api/v1/jobs/{waiting}", headers=me)).json()
        assert job["status"] == "queued" and job["waiting_reason"].startswith(why[0]["cause"])
        # issue 17: the reason ends with the fair-share priority the job waits at
        assert job["waiting_reason"].endswith("(priority 5, fair-share 1.00)")
        assert job["effective_priority"] > 0

        task = next(t for t in h.tasks if t.job_id == us)
        before = rejected("other_provider")
        forged = task.model_copy(update={"provider_id": "p-rtx"})
        await h.report(forged, JobState.COMPLETED, exit_code=0)
        await eventually_async(lambda: rejected("other_provider") > before)
        still = (await client.get(f"/api/v1/jobs/{us}", headers=me)).json()
        assert still["status"] == "dispatched"

        await h.report(task, JobState.RUNNING)
        await job_in(client, me, us, "running")
        await h.report(task, JobState.COMPLETED, exit_code=0)
        done = await job_in(client, me, us, "completed")
        assert done["exit_code"] == 0
        moved = await job_in(client, me, waiting, "dispatched")
        assert moved["provider_id"] == "p-h100"
        evs = await events(client, me, us)
        assert [e["to"] for e in evs] == ["queued", "dispatched", "running", "completed"]
        assert all(e["at"] and e["cause"] for e in evs)


async def test_a_dispatch_not_started_by_its_deadline_is_requeued_then_failed(
    scheduler_factory: Any, own_nats: str, mint_token: Callable[..., str]
) -> None:
    owner = str(uuid.uuid4())
    me = auth(mint_token, owner)
    async with (
        scheduler_factory(dispatch_timeout_seconds=0.5) as (_, client),
        Harness(own_nats, mint_token, auto_answer=False) as h,
    ):
        await h.announce("p-silent", RTX, max_concurrent_tasks=2)
        job_id = await h.submit(owner, 1, max_retries=1)
        failed = await job_in(client, me, job_id, "failed")
        assert failed["attempt"] == 2 and "retries exhausted" in failed["error"]
        # transitions only: a "waiting" note may come first if the job beat the provider's event
        evs = [e for e in await events(client, me, job_id) if e["from"] != e["to"]]
        assert [(e["to"], e["attempt"]) for e in evs] == [
            ("queued", 1),
            ("dispatched", 1),
            ("queued", 1),
            ("dispatched", 2),
            ("failed", 2),
        ]
        assert "not started by its deadline" in evs[2]["cause"]
        sent = [t for t in h.tasks if t.job_id == job_id]
        assert [t.attempt for t in sent] == [1, 2]
        assert all(t.start_deadline is not None for t in sent)
        # the provider is told to drop each expired attempt, in case it starts it late
        await eventually_async(lambda: len([c for c in h.cancels if c[0] == job_id]) > 1)
        assert sorted(c for c in h.cancels if c[0] == job_id) == [(job_id, 1), (job_id, 2)]
