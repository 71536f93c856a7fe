"""Placement throughput and submit→dispatch latency with many registered providers.

Starts its own nats-server and one real scheduler process (``python -m scheduler serve``) on
free ports, announces ``--providers`` simulated providers (8 GPUs each, mixed models and prices)
on the registry's event subject, then:

* **burst**: publishes ``--jobs`` submissions at once (as the gateway does) and measures
  queued→dispatched throughput (jobs / time from first submit to last dispatch);
* **paced**: publishes ``--paced-jobs`` at ``--rate`` per second and measures each job's
  submit→dispatch latency (p50 / p99) when the scheduler is not saturated.

A dispatch is timed when its task message reaches the provider's subject. Jobs are never
completed, so every job fits (the fleet has far more GPUs than jobs).

    python bench/placement.py                                      # SQLite
    python bench/placement.py --pg-admin-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import typer
from nats.aio.msg import Msg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.contracts import JobSubmitted, ProviderEvent  # noqa: E402
from shared.db import utcnow  # noqa: E402
from tests.support.servers import spawned  # noqa: E402

cli = typer.Typer(add_completion=False, no_args_is_help=True)
MODELS = [("NVIDIA H100 80GB", 81920), ("NVIDIA A100-SXM4-40GB", 40960), ("RTX 4090", 24564)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_pg_database(admin_url: str) -> str:
    import asyncpg

    name = f"bench_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect(admin_url)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    asyncio.run(create())
    base = admin_url.rpartition("/")[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


async def wait_ready(port: int, proc: subprocess.Popen) -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError("scheduler exited at start; see its log")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{port}/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError("scheduler not ready")


async def measure(
    nats_url: str, db_url: str, providers: int, jobs: int, paced: int, rate: float
) -> tuple[float, list[float], list[float], int]:
    import nats
    import sqlalchemy as sa

    from shared.db import make_engine
    from shared.nats import ensure_streams, publish

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    dispatched: dict[str, float] = {}

    async def on_task(msg: Msg) -> None:
        dispatched.setdefault(json.loads(msg.data)["job_id"], time.perf_counter())

    await nc.subscribe("tasks.dispatch.*", cb=on_task)
    for i in range(providers):
        name, mem = MODELS[i % len(MODELS)]
        gpus = [{"index": g, "name": name, "memory_total_mb": mem} for g in range(8)]
        ev = ProviderEvent(
            kind="registered",
            provider_id=f"bench-{i:05d}",
            status="online",
            at=utcnow(),
            max_concurrent_tasks=8,
            price_per_hour=round(random.uniform(0.5, 4.0), 2),
            gpus=gpus,
        )
        await publish(js, "providers.events.registered", ev)
    engine = make_engine(db_url)
    while True:  # the scheduler knows every provider before the clock starts
        async with engine.connect() as conn:
            n = (await conn.execute(sa.text("SELECT count(*) FROM provider_views"))).scalar_one()
        if n >= providers:
            break
        await asyncio.sleep(0.2)
    await engine.dispose()

    async def submit(owner: str) -> tuple[str, float]:
        job_id = str(uuid.uuid4())
        spec = {
            "resources": {"gpu_count": random.choice([1, 1, 2, 4])},
            "params": {"script_content": "true"},
        }
        msg = JobSubmitted(
            job_id=job_id, owner_id=owner, type="script", name="b", spec=spec, submitted_at=utcnow()
        )
        at = time.perf_counter()
        await publish(js, "jobs.submitted", msg, msg_id=job_id)
        return job_id, at

    async def wait_all(ids: list[str], limit: float = 600) -> None:
        end = time.perf_counter() + limit
        for _ in iter(int, 1):  # until all are dispatched or the limit passes
            if all(j in dispatched for j in ids) or time.perf_counter() > end:
                return
            await asyncio.sleep(0.01)

    owner = str(uuid.uuid4())
    burst = [await submit(owner) for _ in range(jobs)]
    await wait_all([j for j, _ in burst])
    first = burst[0][1]
    last = max(dispatched.get(j, float("nan")) for j, _ in burst)
    throughput = jobs / (last - first)
    burst_lat = [dispatched[j] - t for j, t in burst if j in dispatched]

    paced_runs = []
    for _ in range(paced):
        paced_runs.append(await submit(owner))
        await asyncio.sleep(1 / rate)
    await wait_all([j for j, _ in paced_runs])
    paced_lat = [dispatched[j] - t for j, t in paced_runs if j in dispatched]
    await nc.drain()
    return throughput, burst_lat, paced_lat, len(burst) - len(burst_lat)


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] * 1000


@cli.command()
def run(
    providers: int = typer.Option(1000),
    jobs: int = typer.Option(2000, help="burst size"),
    paced_jobs: int = typer.Option(200),
    rate: float = typer.Option(20.0, help="paced submissions per second"),
    pg_admin_url: str | None = typer.Option(None, help="PostgreSQL to create a fresh DB on"),
    placement_batch: int = typer.Option(200),
    keep: bool = typer.Option(False, help="keep the work dir (scheduler log at INFO)"),
) -> None:
    """Run both phases and print a table."""
    work = Path(tempfile.mkdtemp(prefix="dante-bench-placement-"))
    nats_bin = Path(sys.executable).parent / "nats-server"
    nats_port, sched_port = free_port(), free_port()
    db_url = (
        fresh_pg_database(pg_admin_url)
        if pg_admin_url
        else f"sqlite+aiosqlite:///{work}/scheduler.sqlite"
    )
    env = {
        **os.environ,
        "DANTE_SCHEDULER_PORT": str(sched_port),
        "DANTE_SCHEDULER_DATABASE_URL": db_url,
        "DANTE_SCHEDULER_NATS_URL": f"nats://127.0.0.1:{nats_port}",
        "DANTE_SCHEDULER_PLACEMENT_BATCH": str(placement_batch),
        "DANTE_SCHEDULER_LOG_LEVEL": "INFO" if keep else "WARNING",
    }
    nats_argv = [str(nats_bin), "-a", "127.0.0.1", "-p", str(nats_port), "-js", "-sd", str(work)]
    try:
        with (
            spawned(nats_argv, dict(os.environ), work / "nats.log", cwd=ROOT),
            spawned(
                [sys.executable, "-m", "scheduler", "serve"], env, work / "sched.log", cwd=ROOT
            ) as s,
        ):
            asyncio.run(wait_ready(sched_port, s))
            thr, burst, paced, missing = asyncio.run(
                measure(f"nats://127.0.0.1:{nats_port}", db_url, providers, jobs, paced_jobs, rate)
            )
    finally:
        if keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    db = "PostgreSQL" if pg_admin_url else "SQLite"
    print(f"\nplacement bench: {providers} providers x 8 GPUs, {db}, batch {placement_batch}")
    print(f"{'phase':<28}{'jobs':>7}{'jobs/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    print(
        f"{'burst (queued→dispatched)':<28}{jobs:>7}{thr:>10.1f}"
        f"{pct(burst, 50):>10.1f}{pct(burst, 99):>10.1f}"
    )
    print(
        f"{f'paced ({rate:g}/s)':<28}{paced_jobs:>7}{'':>10}"
        f"{pct(paced, 50):>10.1f}{pct(paced, 99):>10.1f}"
    )
    if missing:
        print(f"WARNING: {missing} burst jobs were not dispatched in time")


if __name__ == "__main__":
    cli()
