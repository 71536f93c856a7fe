"""Issue 17's policies through the real scheduler (in-process app, real NATS, SQLite and
PostgreSQL): quotas set by an admin hold a job back, an unhealthy GPU and a cordoned host get no
work, and a priority-9 job preempts a priority-1 job that later runs again as attempt 2."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from shared.contracts import JobState
from tests.support.harness import Harness
from tests.support.scheduler import auth, events, job_in
from tests.support.wait import eventually_async

A100 = "NVIDIA A100-SXM4-40GB"


async def task_of(h: Harness, job_id: str, attempt: int = 1) -> Any:
    """The task message of that attempt once it has reached the (simulated) provider."""

    def got() -> Any:
        return next((t for t in h.tasks if t.job_id == job_id and t.attempt == attempt), None)

    return await eventually_async(got, what=f"task of {job_id} attempt {attempt}")


def gpus(*healthy: bool) -> list[dict]:
    return [
        {"index": i, "name": A100, "memory_total_mb": 40960, "healthy": h}
        for i, h in enumerate(healthy)
    ]


async def test_quota_unhealthy_gpu_and_cordon(
    scheduler_factory: Any, own_nats: str, mint_token: Callable[..., str]
) -> None:
    owner = str(uuid.uuid4())
    me, admin = auth(mint_token, owner), auth(mint_token, str(uuid.uuid4()), "admin")
    async with (
        scheduler_factory(dispatch_timeout_seconds=600) as (_, client),
        Harness(own_nats, mint_token, auto_answer=False) as h,
    ):
        # GPU 0 reported unhealthy by the daemon: only GPU 1 and 2 are placeable
        await h.announce("p-sick", gpus(False, True, True), max_concurrent_tasks=4)

        refused = await client.put(f"/api/v1/scheduler/policies/{owner}", json={}, headers=me)
        assert refused.status_code == 403
        r = await client.put(
            f"/api/v1/scheduler/policies/{owner}",
            json={"max_gpus": 1, "share": 2},
            headers=admin,
        )
        assert r.status_code == 200 and r.json()["max_gpus"] == 1
        mine = await client.get(f"/api/v1/scheduler/policies/{owner}", headers=me)
        assert mine.json()["share"] == 2

        first = await h.submit(owner, 1)
        placed = await job_in(client, me, first, "dispatched")
        assert placed["gpu_indices"] == [1]  # not the unhealthy GPU 0
        second = await h.submit(owner, 1)

        async def over_quota() -> dict | None:
            j = (await client.get(f"/api/v1/jobs/{second}", headers=me)).json()
            return j if "over quota" in (j.get("waiting_reason") or "") else None

        waiting = await eventually_async(over_quota)
        assert "1 of 1 concurrent GPU(s) in use" in waiting["waiting_reason"]
        assert "effective priority" in waiting["waiting_reason"]

        # raise the quota: the second job takes GPU 2; a third finds only the sick GPU
        await client.put(f"/api/v1/scheduler/policies/{owner}", json={"max_gpus": 8}, headers=admin)
        assert (await job_in(client, me, second, "dispatched"))["gpu_indices"] == [2]
        third = await h.submit(owner, 1)

        async def none_free() -> dict | None:
            j = (await client.get(f"/api/v1/jobs/{third}", headers=me)).json()
            return j if "none free now" in (j.get("waiting_reason") or "") else None

        await eventually_async(none_free)

        # cordon with eviction: what ran there is requeued (as preempted), nothing new goes
        r = await client.post(
            "/api/v1/scheduler/providers/p-sick/cordon",
            json={"reason": "maintenance", "evict": True},
            headers=admin,
        )
        assert r.status_code == 200 and sorted(r.json()["requeued"]) == sorted([first, second])
        await eventually_async(
            lambda: (first, 1) in h.cancels and (second, 1) in h.cancels, what="both cancels"
        )
        again = await job_in(client, me, first, "queued")
        assert again["attempt"] == 2 and again["preemptions"] == 1
        assert (
            await client.post("/api/v1/scheduler/providers/p-sick/cordon", headers=me)
        ).status_code == 403

        async def all_wait() -> bool:
            seen = [
                (await client.get(f"/api/v1/jobs/{j}", headers=me)).json()
                for j in (first, second, third)
            ]
            return all(
                s["status"] == "queued" and "no live provider" in (s["waiting_reason"] or "")
                for s in seen
            )

        await eventually_async(all_wait)
        r = await client.delete("/api/v1/scheduler/providers/p-sick/cordon", headers=admin)
        assert r.status_code == 200 and r.json()["cordoned"] is False
        back = await job_in(client, me, first, "dispatched")
        assert back["provider_id"] == "p-sick" and back["gpu_indices"] != [0]


async def test_priority_9_preempts_priority_1_which_completes_as_attempt_2(
    scheduler_factory: Any, own_nats: str, mint_token: Callable[..., str]
) -> None:
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    as_alice, as_bob = auth(mint_token, alice), auth(mint_token, bob)
    async with (
        scheduler_factory(
            dispatch_timeout_seconds=600,
            preemption="lower-priority",
            preemption_min_run_seconds=0,
        ) as (_, client),
        Harness(own_nats, mint_token, auto_answer=False) as h,
    ):
        await h.announce("p-one", gpus(True))
        low = await h.submit(alice, 1, priority=1)
        await job_in(client, as_alice, low, "dispatched")
        low_task = await task_of(h, low)
        await h.report(low_task, JobState.RUNNING)
        await job_in(client, as_alice, low, "running")

        high = await h.submit(bob, 1, priority=9)
        got = await job_in(client, as_bob, high, "dispatched")
        assert got["provider_id"] == "p-one" and got["gpu_indices"] == [0]
        victim = await job_in(client, as_alice, low, "queued", "dispatched")
        assert victim["attempt"] == 2 and victim["preemptions"] == 1
        # the daemon is told to stop attempt 1
        await eventually_async(lambda: (low, 1) in h.cancels, what="cancel of attempt 1")
        causes = [e["cause"] for e in await events(client, as_alice, low)]
        assert any(c.startswith(f"preempted by job {high}") for c in causes)
        # the preempted attempt's late "failed" (killed) report changes nothing
        await h.report(low_task, JobState.FAILED, exit_code=143)

        high_task = await task_of(h, high)
        await h.report(high_task, JobState.RUNNING)
        await h.report(high_task, JobState.COMPLETED, exit_code=0)
        await job_in(client, as_bob, high, "completed")

        redo = await job_in(client, as_alice, low, "dispatched")
        assert redo["attempt"] == 2
        task2 = await task_of(h, low, 2)
        await h.report(task2, JobState.RUNNING)
        await h.report(task2, JobState.COMPLETED, exit_code=0)
        done = await job_in(client, as_alice, low, "completed")
        assert done["attempt"] == 2 and done["exit_code"] == 0 and done["preemptions"] == 1


async def test_gang_placed_whole_and_requeued_whole(
    scheduler_factory: Any, own_nats: str, mint_token: Callable[..., str]
) -> None:
    owner = str(uuid.uuid4())
    me = auth(mint_token, owner)
    async with (
        scheduler_factory(dispatch_timeout_seconds=600) as (_, client),
        Harness(own_nats, mint_token, auto_answer=False) as h,
    ):
        await h.announce("g-0", gpus(True, True), labels={"address": "10.0.0.7"})
        await h.announce("g-1", gpus(True))
        # three ranks cannot fit two hosts: nothing is placed, nothing held
        big = await h.submit(owner, 1, resources={"gpu_count": 1, "nodes": 3})

        async def gang_waits() -> dict | None:
            j = (await client.get(f"/api/v1/jobs/{big}", headers=me)).json()
            return j if "gang of 3" in (j.get("waiting_reason") or "") else None

        await eventually_async(gang_waits)
        assert not [t for t in h.tasks if t.job_id == big]

        job = await h.submit(owner, 1, resources={"gpu_count": 1, "nodes": 2})
        await job_in(client, me, job, "dispatched")

        async def first_attempt() -> list | None:
            got = [t for t in h.tasks if t.job_id == job and t.attempt == 1]
            return got if len(got) == 2 else None

        ranks = sorted(await eventually_async(first_attempt), key=lambda t: t.gang.rank)
        assert [t.provider_id for t in ranks] in (["g-0", "g-1"], ["g-1", "g-0"])
        assert [t.gang.rank for t in ranks] == [0, 1]
        env = ranks[1].gang.env()
        assert env["DANTE_WORLD_SIZE"] == "2" and env["DANTE_RANK"] == "1"
        master = "10.0.0.7" if ranks[0].provider_id == "g-0" else "127.0.0.1"
        assert env["MASTER_ADDR"] == master and env["MASTER_PORT"] == "29500"
        for t in ranks:
            await h.report(t, JobState.RUNNING)
        await job_in(client, me, job, "running")

        # rank 1 fails: every rank is told to stop and the gang goes back as attempt 2
        await h.report(ranks[1], JobState.FAILED, exit_code=3)
        again = await job_in(client, me, job, "queued", "dispatched")
        assert again["attempt"] == 2
        # every rank is told to stop: one cancel per rank, published after the commit
        await eventually_async(lambda: h.cancels.count((job, 1)) == 2, what="a cancel per rank")

        async def second_attempt() -> list | None:
            got = [t for t in h.tasks if t.job_id == job and t.attempt == 2]
            return got if len(got) == 2 else None

        ranks2 = sorted(await eventually_async(second_attempt), key=lambda t: t.gang.rank)
        for t in ranks2:
            await h.report(t, JobState.RUNNING)
        await job_in(client, me, job, "running")
        # rank 1's provider is lost: the whole gang is requeued (attempt 3)
        lost = ranks2[1].provider_id
        from shared.contracts import ProviderEvent
        from shared.db import utcnow
        from shared.nats import publish

        await publish(
            h.js,
            "providers.events.offline",
            ProviderEvent(kind="offline", provider_id=lost, status="offline", at=utcnow()),
        )
        third = await job_in(client, me, job, "queued")
        assert third["attempt"] == 3
        await eventually_async(lambda: (job, 2) in h.cancels, what="cancel of attempt 2")
        causes = [e["cause"] for e in await events(client, me, job)]
        assert any(lost in c and "offline" in c for c in causes)


async def test_fair_share_puts_the_owner_below_their_share_first(
    scheduler_factory: Any, own_nats: str, mint_token: Callable[..., str]
) -> None:
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    as_alice, as_bob = auth(mint_token, alice), auth(mint_token, bob)
    async with (
        scheduler_factory(dispatch_timeout_seconds=600) as (_, client),
        Harness(own_nats, mint_token, auto_answer=False) as h,
    ):
        await h.announce("p-fair", gpus(True))
        used = await h.submit(alice, 1)  # alice has used the GPU; bob never has
        await job_in(client, as_alice, used, "dispatched")
        t = await task_of(h, used)
        await h.report(t, JobState.RUNNING)
        await job_in(client, as_alice, used, "running")
        first = await h.submit(alice, 1)  # submitted first, same priority
        later = await h.submit(bob, 1)

        async def both_wait() -> list | None:
            got = [
                (await client.get(f"/api/v1/jobs/{j}", headers=hd)).json()
                for j, hd in ((first, as_alice), (later, as_bob))
            ]
            return got if all(g.get("effective_priority") for g in got) else None

        a, b = await eventually_async(both_wait)
        assert b["effective_priority"] > a["effective_priority"]
        assert "fair-share 1.00" in b["waiting_reason"]
        await h.report(t, JobState.COMPLETED, exit_code=0)
        await job_in(client, as_bob, later, "dispatched")
        still = await job_in(client, as_alice, first, "queued")
        assert "none free now" in still["waiting_reason"]
