"""Two scheduler processes on one PostgreSQL never place a job twice; a scheduler killed in the
middle of a stream of submissions loses and duplicates nothing after its restart.

Real nats-server, real PostgreSQL, real registry, real scheduler processes; only the daemons
are simulated (no GPU here), by the harness answering tasks on NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import uuid
from pathlib import Path

import httpx

from tests.support.harness import Harness, job_rows, scheduler_process, wait_healthy
from tests.support.wait import eventually_async

FAST = {
    "placement_interval_seconds": "0.2",
    "heartbeat_ttl_seconds": "3600",
    # The harness answers every task; on a loaded machine (two xdist workers on two cores, other
    # suites besides) its "running" can come seconds late, and an attempt requeued for that
    # would run twice. The timeout is not what these tests are about, so it is generous.
    "dispatch_timeout_seconds": "20",
    "ack_wait_seconds": "5",
}


async def test_two_replicas_place_500_jobs_exactly_once(
    own_nats: str, sched_db: str, registry: httpx.AsyncClient, mint_token, tmp_path: Path
) -> None:
    db = sched_db
    async with Harness(own_nats, mint_token) as h:
        await h.register(registry, 20)
        with contextlib.ExitStack() as stack:
            procs = [
                stack.enter_context(
                    scheduler_process(db, own_nats, tmp_path / f"scheduler-{i}.log", **FAST)
                )
                for i in range(2)
            ]
            for proc, port in procs:
                await wait_healthy(proc, port)
            owners = [str(uuid.uuid4()) for _ in range(5)]
            ids = [
                await h.submit(random.choice(owners), random.choice([0, 1, 1, 2, 4]))
                for _ in range(500)
            ]

            async def all_done() -> bool:
                jobs, _ = await job_rows(db)
                return len(jobs) == 500 and all(s == "completed" for s, _ in jobs.values())

            await eventually_async(all_done, limit=90, interval=0.25)
            for proc, _ in procs:
                assert proc.poll() is None, "a scheduler replica died"
        jobs, placed = await job_rows(db)
    assert sorted(jobs) == sorted(ids)
    assert {s for s, _ in jobs.values()} == {"completed"}
    assert all(placed[j] == 1 for j in ids), [j for j in ids if placed[j] != 1][:5]
    assert all(h.dispatches[j] == 1 for j in ids)
    assert all(h.completed[j] == 1 for j in ids)
    assert h.violations == []
    # both replicas really placed jobs (the race was real, not one idle bystander)
    for i in range(2):
        log = (tmp_path / f"scheduler-{i}.log").read_text()
        assert "job.dispatched" in log, f"replica {i} placed nothing"


async def test_scheduler_killed_mid_stream_loses_and_duplicates_nothing(
    own_nats: str, sched_db: str, registry: httpx.AsyncClient, mint_token, tmp_path: Path
) -> None:
    db = sched_db
    log = tmp_path / "scheduler.log"
    async with Harness(own_nats, mint_token) as h:
        await h.register(registry, 20)
        owner = str(uuid.uuid4())
        ids: list[str] = []
        with scheduler_process(db, own_nats, log, **FAST) as (proc, port):
            await wait_healthy(proc, port)
            for i in range(200):
                ids.append(await h.submit(owner, random.choice([0, 1, 2])))
                if i == 80:
                    proc.send_signal(signal.SIGKILL)  # mid-stream, mid-placement, no goodbye
                    proc.wait()
                await asyncio.sleep(0.005)
        with scheduler_process(db, own_nats, log, **FAST) as (proc, port):
            await wait_healthy(proc, port)

            async def all_terminal() -> bool:
                jobs, _ = await job_rows(db)
                return len(jobs) == 200 and all(s == "completed" for s, _ in jobs.values())

            await eventually_async(all_terminal, limit=120, interval=0.25)
        jobs, _ = await job_rows(db)
    assert sorted(jobs) == sorted(ids), "a submission was lost or invented"
    assert {s for s, _ in jobs.values()} == {"completed"}
    # each job ran to completion exactly once on a provider, whatever attempt carried it
    assert all(h.completed[j] == 1 for j in ids), [j for j in ids if h.completed[j] != 1][:5]
    assert h.violations == []
