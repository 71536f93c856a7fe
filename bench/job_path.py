"""The job path at platform speed (issue 12): every figure beside a baseline, in one run.

    python bench/job_path.py                 # full sizes, SQLite and PostgreSQL
    python bench/job_path.py --quick         # smaller sizes (a minute or two)
    python bench/job_path.py --dialect sqlite --only placement
    python bench/job_path.py --quick --runs 3  # medians of three runs, with the spread

Everything runs as real processes on free ports (nats-server from the wheel, the services via
``localdev.cluster`` or ``python -m scheduler serve``). PostgreSQL: ``--pg-admin-url`` (default
``$TEST_DATABASE_URL`` or ``postgresql://postgres@127.0.0.1:5432/test``); fresh databases are
created on it. One HTTP load generator (a minimal keep-alive HTTP/1.1 client on asyncio, so the
client costs little next to the server) drives both the baseline and our endpoints.

Phases and their baselines:

* ``baseline``: a bare FastAPI endpoint (uvicorn, same loop and HTTP parser as our services),
  JetStream publish (awaited one by one, and pipelined), a batched INSERT of job-shaped rows
  into the same database (100 rows per transaction);
* ``intake``: authenticated ``POST /api/v1/jobs`` through the gateway (per-user limits raised,
  not disabled) — baseline: the bare endpoint; then the gateway's own CPU per proxied
  ``GET /api/v1/jobs/{id}``;
* ``placement``: a burst of queued jobs placed onto N providers x 8 GPUs by one scheduler
  process, and submit→dispatched / submit→``running`` at a steady rate. Providers are a harness
  on NATS (no daemons): it reports ``running`` on receipt of a task (and, in the burst, also
  ``completed``, so capacity frees as it would) — baseline: batched INSERT (placement rate) and
  pipelined JetStream publish;
* ``registry``: heartbeats/s absorbed from N simulated providers through the gateway (HTTP,
  baseline: bare endpoint) and as NATS requests (committed and answered by the registry,
  baseline: pipelined JetStream publish), each also per core-second of the processes that
  serve it; ``GET /api/v1/providers`` search p50/p99 at M providers, once the cluster is idle
  again after the heartbeats (the scheduler applies their provider events for a while) —
  baseline: bare endpoint;
* ``reads``: ``GET /api/v1/jobs/{id}`` and a filtered list p50/p99 with K jobs stored, once
  the cluster is idle after their bulk insert — baseline: bare endpoint p99.

``intake``, ``registry`` and ``reads`` each get a cluster (and databases) of their own, so one
phase's jobs are never placed onto the next phase's providers.

Prints a table and one JSON line (``JSON {...}``). Not part of ``make test``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import typer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.contracts import JobSubmitted, ProviderEvent, TaskStatus  # noqa: E402
from shared.db import utcnow  # noqa: E402
from tests.support.servers import (  # noqa: E402
    asyncpg_url,
    create_database,
    free_port,
    libpq_url,
    spawned,
    wait_for_port,
)

cli = typer.Typer(add_completion=False)
MODELS = [("NVIDIA H100 80GB", 81920), ("NVIDIA A100-SXM4-40GB", 40960), ("RTX 4090", 24564)]
NATS_BIN = Path(sys.executable).parent / "nats-server"
INTAKE_RATE = 1500.0
"""The intake rate issue 12 asks for: its p99 is measured at this offered rate, open loop."""


@dataclass
class Sizes:
    providers: int = 1000
    burst: int = 10_000
    paced: int = 1000
    rate: float = 100.0
    search_providers: int = 10_000
    stored_jobs: int = 100_000
    intake: int = 10_000
    heartbeats: int = 10_000
    reads: int = 2000
    conns: int = 32
    paced_conns: int = 64  # open loop: enough that a request seldom waits for a connection


QUICK = Sizes(
    providers=200,
    burst=1000,
    paced=300,
    search_providers=1000,
    stored_jobs=10_000,
    intake=2000,
    heartbeats=2000,
    reads=500,
)


@dataclass
class Result:
    rows: list[tuple[str, str, float, str, float | None]] = field(default_factory=list)
    # (figure, unit, value, baseline name, baseline value)

    def add(self, name: str, unit: str, value: float, base: str = "", bv: float | None = None):
        self.rows.append((name, unit, value, base, bv))
        print(f"  {name}: {value:.1f} {unit}", flush=True)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] * 1000


# --- a minimal HTTP/1.1 load generator ---------------------------------------------------------


async def http_load(
    port: int,
    make: Callable[[int], bytes],
    n: int,
    conns: int,
    *,
    expect: int = 200,
    quiet: bool = False,
) -> tuple[float, list[float], int]:
    """``n`` requests over ``conns`` keep-alive connections; (req/s, latencies s, errors)."""
    lat: list[float] = []
    errors = 0
    counter = iter(range(n))

    async def worker() -> None:
        nonlocal errors
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                t0 = time.perf_counter()
                w.write(make(i))
                status, head = await read_response(r)
                lat.append(time.perf_counter() - t0)
                if status != expect:
                    errors += 1
                    if errors <= 3 and not quiet:
                        print(f"    unexpected {status}: {head[:200]!r}", flush=True)
        finally:
            w.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return n / (time.perf_counter() - t0), lat, errors


async def paced_load(
    port: int, make: Callable[[int], bytes], n: int, rate: float, conns: int, *, expect: int = 200
) -> tuple[float, list[float], int]:
    """``n`` requests offered at ``rate``/s, open loop (as wrk2 does): request ``i`` is due at
    ``i / rate`` whether or not earlier ones have been answered, and its latency counts from
    when it was due, so a server that falls behind shows it in the tail (no coordinated
    omission). ``conns`` keep-alive connections; a request due while all are busy waits for
    one, and that wait is in its latency. Returns (achieved req/s, latencies s, errors)."""
    lat: list[float] = []
    errors = 0
    free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(conns):
        free.put_nowait(await asyncio.open_connection("127.0.0.1", port))

    async def one(i: int, due: float) -> None:
        nonlocal errors
        r, w = await free.get()
        try:
            w.write(make(i))
            status, _ = await read_response(r)
        finally:
            free.put_nowait((r, w))
        lat.append(time.perf_counter() - due)
        if status != expect:
            errors += 1

    t0 = time.perf_counter()
    running: set[asyncio.Task[None]] = set()
    for i in range(n):
        due = t0 + i / rate
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, due))
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running)
    took = time.perf_counter() - t0
    while not free.empty():
        free.get_nowait()[1].close()
    return n / took, lat, errors


async def read_response(r: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response off a keep-alive connection: (status, head)."""
    head = await r.readuntil(b"\r\n\r\n")
    length = 0
    chunked = False
    for line in head.split(b"\r\n"):
        low = line.lower()
        if low.startswith(b"content-length:"):
            length = int(line[15:])
        elif low.startswith(b"transfer-encoding:") and b"chunked" in low:
            chunked = True
    if chunked:  # a proxied (streamed) response
        while True:
            size = int((await r.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            await r.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await r.readexactly(length)
    return int(head[9:12]), head


def request(
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
    if token:
        head += f"authorization: Bearer {token}\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    if body is not None:
        head += f"content-type: application/json\r\ncontent-length: {len(data)}\r\n"
    return head.encode() + b"\r\n" + data


async def sequential_p99(port: int, make: Callable[[int], bytes], n: int) -> tuple[float, float]:
    _, lat, errors = await http_load(port, make, n, 1)
    if errors:
        print(f"    {errors} errors", flush=True)
    return pct(lat, 50), pct(lat, 99)


# --- processes ------------------------------------------------------------------------------

BARE_APP = """
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
app = FastAPI()
class Body(BaseModel):
    type: str
    name: str = ""
@app.post("/hello", status_code=202)
async def hello(body: Body) -> dict:
    return {"job_id": "x", "timestamp": "t"}
@app.get("/hello")
async def get() -> dict:
    return {"hello": "world"}
uvicorn.run(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), log_level="warning",
            access_log=False)
"""


@contextlib.contextmanager
def nats_server(work: Path) -> Iterator[str]:
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [str(NATS_BIN), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(work / "js")]
    with spawned(argv, dict(os.environ), work / "nats.log", cwd=ROOT) as p:
        wait_for_port(port, proc=p)
        yield f"nats://127.0.0.1:{port}"


PROFILE_DIR: Path | None = None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (/proc; Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy so far, all cores (/proc/stat; Linux)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def cpu_shares(cluster: Any) -> Iterator[None]:
    """Print how many cores each of the cluster's processes, this bench and the rest of the
    machine (PostgreSQL's backends among it) used while the block ran: what a latency shared
    the 2 cores with."""
    pids = {p.name: p.popen.pid for p in cluster.procs}
    t0, own0, busy0 = time.perf_counter(), time.process_time(), machine_busy()
    before = {n: cpu_seconds(pid) for n, pid in pids.items()}
    yield
    wall = time.perf_counter() - t0
    used = {n: cpu_seconds(pid) - before[n] for n, pid in pids.items()}
    used["bench"] = time.process_time() - own0
    used["rest"] = max(0.0, machine_busy() - busy0 - sum(used.values()))
    shown = ", ".join(f"{n} {v / wall:.2f}" for n, v in used.items() if v / wall >= 0.01)
    print(f"    cores used: {shown}", flush=True)


@contextlib.contextmanager
def profiled(pid: int, name: str) -> Iterator[None]:
    """py-spy (collapsed stacks) on a process while the block runs, when ``--profile DIR``."""
    spy = Path(sys.executable).parent / "py-spy"
    if PROFILE_DIR is None or not spy.exists():
        yield
        return
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    out = PROFILE_DIR / f"{name}.txt"
    argv = [str(spy), "record", "-p", str(pid), "--gil", "-f", "raw", "-r", "100", "-o", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        print(f"    profile: {out}", flush=True)


CREATED: list[str] = []
"""The PostgreSQL databases this run created (libpq URLs), dropped at its end."""


def db_url_for(dialect: str, work: Path, pg_admin: str, name: str) -> str:
    if dialect == "sqlite":
        return f"sqlite+aiosqlite:///{work}/{name}.sqlite"
    url = create_database(pg_admin, f"bench_{name}")
    CREATED.append(url)
    return asyncpg_url(url)


def drop_created(pg_admin: str) -> None:
    """Drop what :func:`db_url_for` created (a full run leaves ~1 GB otherwise)."""
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(libpq_url(pg_admin))
        try:
            while CREATED:
                name = CREATED.pop().rsplit("/", 1)[1]
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


async def wait_http_ready(port: int, proc: subprocess.Popen, path: str = "/ready") -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        for _ in range(1200):
            if proc.poll() is not None:
                raise RuntimeError("process exited at start; see its log (--keep)")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{port}{path}")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError("not ready")


# --- baselines -----------------------------------------------------------------------------


async def bare_fastapi(work: Path, sizes: Sizes) -> dict[str, float]:
    port = free_port()
    argv = [sys.executable, "-c", BARE_APP, str(port)]
    with spawned(argv, dict(os.environ), work / "bare.log", cwd=ROOT) as p:
        wait_for_port(port, proc=p)
        body = {"type": "script", "name": "b"}
        await http_load(
            port, lambda i: request("POST", "/hello", None, body), 200, sizes.conns, expect=202
        )
        cpu0 = cpu_seconds(p.pid)
        rate, lat, _ = await http_load(
            port,
            lambda i: request("POST", "/hello", None, body),
            sizes.intake,
            sizes.conns,
            expect=202,
        )
        per_core = sizes.intake / max(1e-9, cpu_seconds(p.pid) - cpu0)
        _, paced, _ = await paced_load(
            port,
            lambda i: request("POST", "/hello", None, body),
            sizes.intake,
            INTAKE_RATE,
            sizes.paced_conns,
            expect=202,
        )
        p50, p99 = await sequential_p99(port, lambda i: request("GET", "/hello"), sizes.reads)
    return {
        "rps": rate,
        "p99_loaded": pct(lat, 99),
        "p99_paced": pct(paced, 99),
        "get_p50": p50,
        "get_p99": p99,
        "per_core": per_core,
    }


async def jetstream_publish(nats_url: str, n: int) -> tuple[float, float]:
    import nats

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(name="BENCH", subjects=["bench.>"])
    payload = b"x" * 400
    t0 = time.perf_counter()
    for i in range(n):
        await js.publish("bench.a", payload, headers={"Nats-Msg-Id": f"a{i}"})
    awaited = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    window = 256
    for start in range(0, n, window):
        await asyncio.gather(
            *(
                js.publish("bench.p", payload, headers={"Nats-Msg-Id": f"p{i}"})
                for i in range(start, min(n, start + window))
            )
        )
    pipelined = n / (time.perf_counter() - t0)
    await js.delete_stream("BENCH")
    await nc.close()
    return awaited, pipelined


async def batched_insert(db_url: str, n: int) -> float:
    import sqlalchemy as sa

    from shared.db import make_engine

    md = sa.MetaData()
    t = sa.Table(
        "bench_rows",
        md,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner_id", sa.String(36)),
        sa.Column("state", sa.String(16)),
        sa.Column("spec", sa.JSON),
        sa.Column("created_at", sa.DateTime(timezone=True)),
    )
    engine = make_engine(db_url)
    async with engine.begin() as conn:
        await conn.run_sync(md.create_all)
    owner = str(uuid.uuid4())
    rows = [
        {
            "id": str(uuid.uuid4()),
            "owner_id": owner,
            "state": "queued",
            "spec": {"resources": {"gpu_count": 1}, "params": {"script_content": "true"}},
            "created_at": utcnow(),
        }
        for _ in range(n)
    ]
    t0 = time.perf_counter()
    for start in range(0, n, 100):
        async with engine.begin() as conn:
            await conn.execute(t.insert(), rows[start : start + 100])
    rate = n / (time.perf_counter() - t0)
    async with engine.begin() as conn:
        await conn.run_sync(md.drop_all)
    await engine.dispose()
    return rate


# --- placement: one scheduler, a provider harness on NATS ----------------------------------


async def placement_measure(
    nats_url: str, db_url: str, sizes: Sizes, pid: int, profile_tag: str = "placement"
) -> tuple[float, list[float], list[float], list[float], int, float]:
    import nats
    import sqlalchemy as sa
    from nats.aio.msg import Msg

    from scheduler.models import Job
    from shared.contracts import status_subject
    from shared.db import make_engine
    from shared.nats import ensure_streams, publish

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    dispatched: dict[str, float] = {}
    complete = True  # burst: report running+completed on receipt; paced: running only
    pending: set[asyncio.Task[Any]] = set()

    async def report(task: dict[str, Any], done: bool) -> None:
        for state in ("running", "completed") if done else ("running",):
            st = TaskStatus(
                job_id=task["job_id"],
                attempt=task["attempt"],
                provider_id=task["provider_id"],
                state=state,
                exit_code=0 if state == "completed" else None,
                at=utcnow(),
            )
            await publish(js, status_subject(st.job_id), st)

    async def on_task(msg: Msg) -> None:
        task = json.loads(msg.data)
        if task["job_id"] in dispatched:
            return
        dispatched[task["job_id"]] = time.perf_counter()
        t = asyncio.create_task(report(task, complete))
        pending.add(t)
        t.add_done_callback(pending.discard)

    await nc.subscribe("tasks.dispatch.*", cb=on_task)
    for i in range(sizes.providers):
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
        if n >= sizes.providers:
            break
        await asyncio.sleep(0.2)

    owner = str(uuid.uuid4())

    def submission(gpus: int) -> JobSubmitted:
        job_id = str(uuid.uuid4())
        spec = {"resources": {"gpu_count": gpus}, "params": {"script_content": "true"}}
        return JobSubmitted(
            job_id=job_id, owner_id=owner, type="script", name="b", spec=spec, submitted_at=utcnow()
        )

    async def wait_all(ids: list[str], limit: float = 900) -> None:
        end = time.perf_counter() + limit
        while time.perf_counter() < end:
            if all(j in dispatched for j in ids):
                return
            await asyncio.sleep(0.02)

    # burst: published pipelined (as many gateway replicas would), then placed
    subs = [submission(random.choice([1, 1, 2, 4])) for _ in range(sizes.burst)]
    with profiled(pid, f"scheduler-{profile_tag}"):  # the burst only, as the CPU figure
        cpu0 = cpu_seconds(pid)
        t0 = time.perf_counter()
        for start in range(0, len(subs), 256):
            await asyncio.gather(
                *(
                    publish(js, "jobs.submitted", s, msg_id=s.job_id)
                    for s in subs[start : start + 256]
                )
            )
        await wait_all([s.job_id for s in subs])
        placed = [dispatched[s.job_id] for s in subs if s.job_id in dispatched]
        rate = len(placed) / (max(placed) - t0) if placed else 0.0
        missing = len(subs) - len(placed)
        cpu_per_job = (cpu_seconds(pid) - cpu0) / max(1, len(placed))
    await asyncio.sleep(2)  # let the completions drain before the steady phase

    complete = False
    paced: list[tuple[str, float]] = []
    start = time.perf_counter()
    with profiled(pid, f"scheduler-{profile_tag}-paced"):
        for i in range(sizes.paced):
            s = submission(1)
            at = time.perf_counter()
            await publish(js, "jobs.submitted", s, msg_id=s.job_id)
            paced.append((s.job_id, at))
            delay = start + (i + 1) / sizes.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await wait_all([j for j, _ in paced], 120)
    to_dispatch = [dispatched[j] - t for j, t in paced if j in dispatched]
    ids = [j for j, _ in paced]
    to_running: list[float] = []
    end = time.perf_counter() + 60
    while time.perf_counter() < end:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(Job.created_at, Job.started_at).where(
                        Job.id.in_(ids), Job.started_at.is_not(None)
                    )
                )
            ).all()
        if len(rows) >= len(ids):
            break
        await asyncio.sleep(0.5)
    for created, started in rows:
        to_running.append((started - created) / timedelta(seconds=1))
    await engine.dispose()
    await nc.drain()
    return rate, to_dispatch, to_running, [], missing, cpu_per_job


def show_metrics(port: int) -> None:
    """The scheduler's own view: rounds (count, mean), messages handled per consumer."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    got: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(
            (
                "dante_scheduler_placement_round_duration_seconds_sum",
                "dante_scheduler_placement_round_duration_seconds_count",
                "dante_nats_messages_total",
                "dante_scheduler_placements_total",
            )
        ):
            name, _, value = line.rpartition(" ")
            got[name] = float(value)
    rounds = got.get("dante_scheduler_placement_round_duration_seconds_count", 0)
    total = got.get("dante_scheduler_placement_round_duration_seconds_sum", 0)
    print(f"    rounds {rounds:.0f}, mean {1000 * total / max(rounds, 1):.1f} ms", flush=True)
    for k, v in got.items():
        if "messages_total" in k or "placements_total" in k:
            print(f"    {k} {v:.0f}", flush=True)


def run_placement(dialect: str, work: Path, pg_admin: str, sizes: Sizes, res: Result) -> None:
    db_url = db_url_for(dialect, work, pg_admin, "placement")
    with nats_server(work / "placement") as nats_url:
        port = free_port()
        env = {
            **os.environ,
            "DANTE_SCHEDULER_PORT": str(port),
            "DANTE_SCHEDULER_DATABASE_URL": db_url,
            "DANTE_SCHEDULER_NATS_URL": nats_url,
            "DANTE_SCHEDULER_LOG_LEVEL": "WARNING",
            "DANTE_SCHEDULER_DISPATCH_TIMEOUT_SECONDS": "600",
        }
        argv = [sys.executable, "-m", "scheduler", "serve"]
        with spawned(argv, env, work / f"sched-{dialect}.log", cwd=ROOT) as s:
            asyncio.run(wait_http_ready(port, s))
            rate, disp, running, _, missing, cpu = asyncio.run(
                placement_measure(nats_url, db_url, sizes, s.pid, dialect)
            )
            show_metrics(port)
    tag = dialect
    res.add(f"placement burst ({tag})", "jobs/s", rate, f"batched INSERT ({tag})", None)
    res.add(f"placement burst, scheduler CPU per job ({tag})", "ms", cpu * 1000)
    res.add(f"placement burst per scheduler core-second ({tag})", "jobs/s", 1 / cpu if cpu else 0)
    if missing:
        print(f"    WARNING: {missing} burst jobs not dispatched", flush=True)
    res.add(f"submit→dispatched p50 ({tag})", "ms", pct(disp, 50), "JetStream awaited", None)
    res.add(f"submit→dispatched p99 ({tag})", "ms", pct(disp, 99), "JetStream awaited", None)
    res.add(f"submit→running p50 ({tag})", "ms", pct(running, 50), "JetStream awaited", None)
    res.add(f"submit→running p99 ({tag})", "ms", pct(running, 99), "JetStream awaited", None)


# --- the whole platform: gateway intake, registry, reads ------------------------------------


def run_cluster(
    dialect: str, work: Path, pg_admin: str, sizes: Sizes, res: Result, phase: str
) -> None:
    """One phase on a cluster of its own: the intake phase's 40,000 queued jobs would otherwise
    be placed onto the registry phase's 10,000 providers, a long burst of placements and
    holds that every later figure would have to wait out."""
    from auth_service.keys import KeyRing
    from localdev.cluster import ClusterConfig, LocalCluster
    from tests.support.tokens import claims

    urls: dict[str, str] = {}
    if dialect == "postgresql":
        urls = {
            s: db_url_for(dialect, work, pg_admin, f"{s}_{phase}")
            for s in ("auth", "registry", "scheduler")
        }
    data = work / f"cluster-{dialect}-{phase}"
    high = "1000000"
    cfg = ClusterConfig(
        data_dir=data,
        prefer_default_ports=False,
        database_urls=urls,
        log_dir=data / "logs",
        daemons=0,
        nats_auth=False,
        extra_env={
            "DANTE_GATEWAY_RATE_LIMIT_USER_PER_SECOND": high,
            "DANTE_GATEWAY_RATE_LIMIT_USER_BURST": high,
            "DANTE_GATEWAY_RATE_LIMIT_IP_PER_SECOND": high,
            "DANTE_GATEWAY_RATE_LIMIT_IP_BURST": high,
            "DANTE_GATEWAY_RATE_LIMIT_PROVIDER_PER_SECOND": high,
            "DANTE_GATEWAY_RATE_LIMIT_PROVIDER_BURST": high,
            "DANTE_REGISTRY_HEARTBEAT_TTL_SECONDS": "3600",
            "DANTE_GATEWAY_LOG_LEVEL": "WARNING",
            "DANTE_REGISTRY_LOG_LEVEL": "WARNING",
            "DANTE_SCHEDULER_LOG_LEVEL": "WARNING",
            "DANTE_AUTH_LOG_LEVEL": "WARNING",
        },
    )
    cluster = LocalCluster(cfg)
    cluster.start(timeout=120)
    try:
        ring = KeyRing(data / "keys", create=False)
        gw = cluster.ports["gateway"]
        user = str(uuid.uuid4())
        token = ring.sign(claims("requester", user, ttl=3600))
        asyncio.run(
            cluster_measure(cluster, dialect, ring, gw, user, token, sizes, res, urls, phase)
        )
    finally:
        cluster.stop()


async def cluster_measure(
    cluster: Any,
    dialect: str,
    ring: Any,
    gw: int,
    user: str,
    token: str,
    sizes: Sizes,
    res: Result,
    urls: dict[str, str],
    phase: str,
) -> None:
    if phase == "intake":
        await measure_intake(cluster, gw, token, sizes, res, dialect)
        await measure_proxied_read(cluster, gw, user, token, sizes, res, dialect)
    elif phase == "registry":
        await measure_registry(cluster, ring, gw, token, sizes, res, dialect)
    elif phase == "reads":
        await measure_reads(cluster, gw, user, token, sizes, res, dialect, urls)


async def measure_intake(
    cluster: Any, gw: int, token: str, sizes: Sizes, res: Result, dialect: str
) -> None:

    tag = dialect
    body = {
        "type": "script",
        "name": "bench",
        "params": {"script_content": "true"},
        "resources": {"gpu_count": 1},
    }
    post = request("POST", "/api/v1/jobs", token, body)
    await http_load(gw, lambda i: post, 200, sizes.conns, expect=202)  # warm-up
    gw_pid = cluster.process("gateway").pid
    cpu0 = cpu_seconds(gw_pid)
    with profiled(gw_pid, f"gateway-intake-{dialect}"):
        rate, lat, errors = await http_load(
            gw, lambda i: post, sizes.intake, sizes.conns, expect=202
        )
    cpu = (cpu_seconds(gw_pid) - cpu0) / sizes.intake
    res.add(
        f"gateway intake per gateway core-second ({tag})",
        "jobs/s",
        1 / cpu if cpu else 0,
        "bare FastAPI per core-second",
    )
    res.add(f"gateway intake ({tag})", "jobs/s", rate, "bare FastAPI", None)
    res.add(f"gateway intake p99 ({tag})", "ms", pct(lat, 99), "bare FastAPI p99", None)
    if errors:
        print(f"    {errors} intake errors", flush=True)
    # the same submissions offered at the target rate, open loop: the latency a client sees
    # at 1,500 jobs/s, not the queue 32 saturating connections build, nor the scheduler still
    # storing the saturating run's backlog beside it
    await cluster_idle(cluster)
    sched_pid = cluster.process("scheduler").pid
    with (
        cpu_shares(cluster),
        profiled(gw_pid, f"gateway-paced-{dialect}"),
        profiled(sched_pid, f"scheduler-paced-{dialect}"),
    ):
        got, lat, errors = await paced_load(
            gw, lambda i: post, sizes.intake, INTAKE_RATE, sizes.paced_conns, expect=202
        )
    rate_tag = f"{INTAKE_RATE:,.0f}/s offered"
    res.add(f"gateway intake achieved at {rate_tag} ({tag})", "jobs/s", got)
    res.add(f"gateway intake p50 at {rate_tag} ({tag})", "ms", pct(lat, 50))
    res.add(f"gateway intake p99 at {rate_tag} ({tag})", "ms", pct(lat, 99), "bare p99 paced", None)
    if errors:
        print(f"    {errors} paced intake errors", flush=True)


async def measure_proxied_read(
    cluster: Any, gw: int, user: str, token: str, sizes: Sizes, res: Result, dialect: str
) -> None:
    """The gateway's own CPU per proxied ``GET /api/v1/jobs/{id}`` (the scheduler's is not
    counted): a few jobs submitted with known Idempotency-Keys, then read over and over."""
    from api_gateway.submit import job_id_for

    body = {"type": "script", "name": "read", "params": {"script_content": "true"}}
    keys = [f"bench-read-{uuid.uuid4()}" for _ in range(20)]
    await http_load(
        gw,
        lambda i: request("POST", "/api/v1/jobs", token, body, {"Idempotency-Key": keys[i]}),
        len(keys),
        4,
        expect=202,
    )
    ids = [job_id_for(user, k) for k in keys]

    def read(i: int) -> bytes:
        return request("GET", f"/api/v1/jobs/{ids[i % len(ids)]}", token)

    for _ in range(600):  # until the scheduler has stored them (a read may 404 meanwhile)
        _, _, missing = await http_load(gw, read, len(ids), 4, quiet=True)
        if not missing:
            break
        await asyncio.sleep(0.1)
    gw_pid = cluster.process("gateway").pid
    n = sizes.reads * 4
    cpu0 = cpu_seconds(gw_pid)
    rate, lat, errors = await http_load(gw, read, n, sizes.conns)
    cpu = (cpu_seconds(gw_pid) - cpu0) / n
    res.add(f"gateway CPU per proxied job read ({dialect})", "us", cpu * 1e6)
    res.add(f"proxied job read ({dialect}, {sizes.conns} connections)", "req/s", rate)
    res.add(f"proxied job read p99 ({dialect})", "ms", pct(lat, 99))
    if errors:
        print(f"    {errors} read errors", flush=True)


async def measure_registry(
    cluster: Any, ring: Any, gw: int, token: str, sizes: Sizes, res: Result, dialect: str
) -> None:
    from tests.support.tokens import claims

    tag = dialect
    # registry: providers registered through the gateway with their own tokens
    n_search = sizes.search_providers
    tokens = []
    for _ in range(n_search):
        pid = str(uuid.uuid4())
        tokens.append(
            (pid, ring.sign(claims("provider", str(uuid.uuid4()), provider_id=pid, ttl=3600)))
        )

    def register(i: int) -> bytes:
        tok = tokens[i][1]
        name, mem = MODELS[i % len(MODELS)]
        gpus = [{"index": g, "name": name, "memory_total_mb": mem} for g in range(8)]
        reg = {"name": f"p{i}", "max_concurrent_tasks": 8, "price_per_hour": 1.5, "gpus": gpus}
        return request("POST", "/api/v1/providers", tok, reg)

    t0 = time.perf_counter()
    await http_load(gw, register, n_search, 8, expect=201)
    print(f"    registered {n_search} providers in {time.perf_counter() - t0:.1f} s", flush=True)
    hb_body = {
        "gpus": [{"index": g, "utilization_pct": 50.0, "temperature_c": 60} for g in range(8)]
    }
    hb_n = min(sizes.providers, n_search)

    def heartbeat(i: int) -> bytes:
        pid, tok = tokens[i % hb_n]
        return request("POST", f"/api/v1/providers/{pid}/heartbeat", tok, hb_body)

    reg_pid, gw_pid = cluster.process("registry").pid, cluster.process("gateway").pid
    cpu0 = cpu_seconds(reg_pid), cpu_seconds(gw_pid)
    with (
        profiled(reg_pid, f"registry-heartbeats-{dialect}"),
        profiled(gw_pid, f"gateway-heartbeats-{dialect}"),
    ):
        rate, _, errors = await http_load(gw, heartbeat, sizes.heartbeats, sizes.conns)
    if errors:
        print(f"    {errors} heartbeat errors", flush=True)
    reg_cpu, gw_cpu = cpu_seconds(reg_pid) - cpu0[0], cpu_seconds(gw_pid) - cpu0[1]
    print(
        f"    HTTP: registry {1000 * reg_cpu / sizes.heartbeats:.2f} ms CPU per beat, "
        f"gateway {1000 * gw_cpu / sizes.heartbeats:.2f} ms",
        flush=True,
    )
    res.add(
        f"heartbeats absorbed over HTTP ({tag}, {hb_n} providers)", "hb/s", rate, "bare FastAPI"
    )
    res.add(
        f"HTTP heartbeats per registry+gateway core-second ({tag})",
        "hb/s",
        sizes.heartbeats / max(1e-9, reg_cpu + gw_cpu),
        "bare FastAPI per core-second",
    )
    await measure_nats_beats(cluster, [pid for pid, _ in tokens[:hb_n]], hb_body, sizes, res, tag)
    await measure_search(cluster, gw, token, sizes, res, tag, n_search)


async def measure_search(
    cluster: Any, gw: int, token: str, sizes: Sizes, res: Result, tag: str, n_search: int
) -> None:
    """``GET /api/v1/providers?gpu_model=*H100*&limit=50`` one request at a time, once the
    cluster has absorbed the heartbeat phase (see :func:`cluster_idle`), with the registry's
    and the gateway's CPU per search."""
    await cluster_idle(cluster)
    reg_pid, gw_pid = cluster.process("registry").pid, cluster.process("gateway").pid
    search = request("GET", "/api/v1/providers?gpu_model=*H100*&limit=50", token)
    await http_load(gw, lambda i: search, 50, 1)  # warm-up
    cpu0 = cpu_seconds(reg_pid), cpu_seconds(gw_pid)
    with (
        profiled(reg_pid, f"registry-search-{tag}"),
        profiled(gw_pid, f"gateway-search-{tag}"),
    ):
        p50, p99 = await sequential_p99(gw, lambda i: search, sizes.reads)
    reg_cpu, gw_cpu = cpu_seconds(reg_pid) - cpu0[0], cpu_seconds(gw_pid) - cpu0[1]
    print(
        f"    provider search p50 {p50:.1f} ms; CPU per search: registry "
        f"{1000 * reg_cpu / sizes.reads:.2f} ms, gateway {1000 * gw_cpu / sizes.reads:.2f} ms",
        flush=True,
    )
    res.add(f"provider search p50 ({tag}, {n_search})", "ms", p50)
    res.add(f"provider search p99 ({tag}, {n_search})", "ms", p99, "bare GET p99", None)


async def cluster_idle(cluster: Any, quiet: float = 0.05, limit: float = 600) -> None:
    """Wait until every process of the cluster has gone quiet: less than ``quiet`` CPU
    seconds in all over one second, so what a phase left behind (the scheduler still applying
    the heartbeat phase's provider events, the registry's outbox, a bulk insert's writes) is
    done before a latency is measured. The cluster is idle, not emptied: the data stays, and
    each request still does all its work. How long it took is printed."""
    pids = [p.popen.pid for p in cluster.procs]
    t0 = time.perf_counter()
    last = sum(cpu_seconds(pid) for pid in pids)
    idle = False
    while not idle and time.perf_counter() - t0 < limit:
        await asyncio.sleep(1)
        now = sum(cpu_seconds(pid) for pid in pids)
        idle, last = now - last < quiet, now
    waited = time.perf_counter() - t0
    print(f"    cluster {'idle' if idle else 'STILL BUSY'} after {waited:.1f} s", flush=True)


async def nats_beat_load(
    nats_url: str, providers: list[str], body: dict[str, Any], n: int, conns: int
) -> tuple[float, int, int]:
    """Simulated daemons: ``conns`` NATS connections, each with as many providers beating
    concurrently (a request per beat, as the daemon sends it), ``n`` beats in all. Returns
    (beats/s answered ``ok``, i.e. committed; how many; how many were not)."""
    import nats

    from shared.contracts import HEARTBEAT_OK, heartbeat_subject

    payload = json.dumps(body).encode()
    ncs = [await nats.connect(nats_url) for _ in range(max(1, conns // 8))]
    left = n
    ok = failed = 0

    async def provider(nc: Any, pid: str) -> None:
        nonlocal left, ok, failed
        subject = heartbeat_subject(pid)
        while left > 0:
            left -= 1
            try:
                reply = await nc.request(subject, payload, timeout=10)
            except Exception:
                failed += 1
                continue
            if reply.data.decode() == HEARTBEAT_OK:
                ok += 1
            else:
                failed += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(provider(ncs[i % len(ncs)], pid) for i, pid in enumerate(providers)))
    elapsed = time.perf_counter() - t0
    for nc in ncs:
        await nc.close()
    return ok / elapsed, ok, failed


async def settled_cpu(*pids: int, quiet: float = 0.02) -> float:
    """The processes' CPU seconds (together) once they have gone quiet (the registry's outbox
    drained and its batches done, the scheduler's events applied): what the beats cost in all,
    not only while they were being sent."""
    last = sum(cpu_seconds(p) for p in pids)
    for _ in range(120):
        await asyncio.sleep(0.5)
        now = sum(cpu_seconds(p) for p in pids)
        if now - last <= quiet * len(pids):
            return now
        last = now
    return last


async def events_published(nats_url: str) -> int:
    """How many messages the EVENTS stream has taken so far (provider and job events)."""
    import nats

    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info("EVENTS")
        return int(info.state.last_seq)
    finally:
        await nc.close()


async def measure_nats_beats(
    cluster: Any, providers: list[str], body: dict[str, Any], sizes: Sizes, res: Result, tag: str
) -> None:
    """Heartbeats as NATS requests, absorbed (committed, then answered) by the registry in
    batches, twice: plain beats (announced once a minute per provider) and beats that list the
    daemon's attempts as every current daemon's do (the scheduler renews leases and reconciles
    from them). The registry's and the scheduler's CPU are counted until both are idle again;
    the figures per core-second do not depend on what else runs."""
    reg_pid, sched_pid = cluster.process("registry").pid, cluster.process("scheduler").pid
    n = sizes.heartbeats * 5
    await nats_beat_load(cluster.nats_url, providers, body, len(providers), sizes.conns)  # warm
    for what, beat in (("plain", body), ("listing attempts", {**body, "attempts": []})):
        await settled_cpu(reg_pid, sched_pid)
        events0 = await events_published(cluster.nats_url)
        cpu0 = cpu_seconds(reg_pid), cpu_seconds(sched_pid)
        load = os.getloadavg()[0]
        with (
            profiled(reg_pid, f"registry-nats-heartbeats-{what.split()[0]}-{tag}"),
            profiled(sched_pid, f"scheduler-nats-heartbeats-{what.split()[0]}-{tag}"),
        ):
            rate, ok, failed = await nats_beat_load(
                cluster.nats_url, providers, beat, n, sizes.conns
            )
        await settled_cpu(reg_pid, sched_pid)
        reg = cpu_seconds(reg_pid) - cpu0[0]
        sched = cpu_seconds(sched_pid) - cpu0[1]
        events = await events_published(cluster.nats_url) - events0
        if failed:
            print(f"    {failed} NATS heartbeats not stored", flush=True)
        print(
            f"    NATS, {what}: registry {1000 * reg / max(1, ok):.3f} ms CPU per beat, "
            f"scheduler {1000 * sched / max(1, ok):.3f} ms, {events} provider events "
            f"published for {ok} beats (load {load:.1f})",
            flush=True,
        )
        res.add(
            f"heartbeats absorbed over NATS, {what} ({tag}, {len(providers)} providers)",
            "hb/s",
            rate,
            "JetStream pipelined",
        )
        res.add(
            f"NATS heartbeats, {what}, per registry core-second ({tag})",
            "hb/s",
            ok / max(1e-9, reg),
            "JetStream pipelined",
        )
        res.add(
            f"NATS heartbeats, {what}, per registry+scheduler core-second ({tag})",
            "hb/s",
            ok / max(1e-9, reg + sched),
            "JetStream pipelined",
        )


async def measure_reads(
    cluster: Any,
    gw: int,
    user: str,
    token: str,
    sizes: Sizes,
    res: Result,
    dialect: str,
    urls: dict[str, str],
) -> None:
    import sqlalchemy as sa

    from scheduler.models import Job
    from shared.db import make_engine

    tag = dialect
    # reads: jobs stored directly (bulk), then read through the gateway
    db = urls.get("scheduler") or f"sqlite+aiosqlite:///{cluster.data}/db/scheduler.sqlite"
    engine = make_engine(db)
    now = utcnow()
    states = ["completed", "completed", "completed", "failed", "cancelled", "completed"]
    ids: list[str] = []
    total = sizes.stored_jobs
    owners = [user] + [str(uuid.uuid4()) for _ in range(9)]
    for start in range(0, total, 500):
        rows = []
        for i in range(start, min(total, start + 500)):
            jid = str(uuid.uuid4())
            owner = owners[i % len(owners)]
            if owner == user:
                ids.append(jid)
            rows.append(
                {
                    "id": jid,
                    "owner_id": owner,
                    "type": "script",
                    "name": "stored",
                    "state": states[i % len(states)],
                    "priority": 5,
                    "attempt": 1,
                    "max_retries": 0,
                    "gpu_count": 1,
                    "min_vram_mb": 0,
                    "spec": {
                        "type": "script",
                        "name": "stored",
                        "resources": {"gpu_count": 1},
                        "params": {"script_content": "true"},
                    },
                    "tags": [],
                    "gpu_indices": [],
                    "artifacts": [],
                    "created_at": now - timedelta(seconds=total - i),
                    "updated_at": now,
                }
            )
        for attempt in range(5):  # the scheduler writes too (SQLite: one writer)
            try:
                async with engine.begin() as conn:
                    await conn.execute(sa.insert(Job), rows)
                break
            except sa.exc.OperationalError:
                if attempt == 4:
                    raise
    await engine.dispose()
    await cluster_idle(cluster)
    sched_pid, gw_pid = cluster.process("scheduler").pid, cluster.process("gateway").pid
    reads = {
        "job get": lambda i: request("GET", f"/api/v1/jobs/{ids[i % len(ids)]}", token),
        "filtered list": lambda i: request("GET", "/api/v1/jobs?state=failed&limit=20", token),
    }
    for what, make in reads.items():
        await http_load(gw, make, 50, 1)  # warm-up
        cpu0 = cpu_seconds(sched_pid), cpu_seconds(gw_pid)
        with profiled(sched_pid, f"scheduler-{what.replace(' ', '-')}-{tag}"):
            p50, p99 = await sequential_p99(gw, make, sizes.reads)
        sched_cpu, gw_cpu = cpu_seconds(sched_pid) - cpu0[0], cpu_seconds(gw_pid) - cpu0[1]
        print(
            f"    {what} p50 {p50:.1f} ms; CPU per read: scheduler "
            f"{1000 * sched_cpu / sizes.reads:.2f} ms, "
            f"gateway {1000 * gw_cpu / sizes.reads:.2f} ms",
            flush=True,
        )
        res.add(f"{what} p50 ({tag}, {total})", "ms", p50)
        res.add(f"{what} p99 ({tag}, {total})", "ms", p99, "bare GET p99", None)


# --- main -------------------------------------------------------------------------------------


def one_run(
    sizes: Sizes, dialects: list[str], phases: set[str], pg_admin_url: str, keep: bool
) -> tuple[Result, dict[str, float]]:
    """Every asked phase once: the figures and the baselines they are compared with."""
    work = Path(tempfile.mkdtemp(prefix="dante-bench-jobpath-"))
    res = Result()
    base: dict[str, float] = {}
    try:
        if "baseline" in phases:
            print("baselines", flush=True)
            b = asyncio.run(bare_fastapi(work, sizes))
            base.update(
                {
                    "bare FastAPI": b["rps"],
                    "bare FastAPI p99": b["p99_loaded"],
                    "bare p99 paced": b["p99_paced"],
                    "bare GET p99": b["get_p99"],
                }
            )
            base["bare FastAPI per core-second"] = b["per_core"]
            res.add("bare FastAPI POST", "req/s", b["rps"])
            res.add("bare FastAPI POST per core-second", "req/s", b["per_core"])
            res.add("bare FastAPI POST p99 (loaded)", "ms", b["p99_loaded"])
            res.add(f"bare FastAPI POST p99 at {INTAKE_RATE:,.0f}/s offered", "ms", b["p99_paced"])
            res.add("bare FastAPI GET p99 (sequential)", "ms", b["get_p99"])
            with nats_server(work / "base") as url:
                aw, pl = asyncio.run(jetstream_publish(url, sizes.intake))
            base["JetStream awaited"] = 1000 / aw  # ms per awaited publish
            base["JetStream pipelined"] = pl
            res.add("JetStream publish awaited", "msg/s", aw)
            res.add("JetStream publish pipelined", "msg/s", pl)
            for d in dialects:
                url = db_url_for(d, work, pg_admin_url, "insert")
                r = asyncio.run(batched_insert(url, sizes.burst))
                base[f"batched INSERT ({d})"] = r
                res.add(f"batched INSERT ({d}, 100/tx)", "rows/s", r)
        for d in dialects:
            if "placement" in phases:
                print(f"placement ({d})", flush=True)
                run_placement(d, work, pg_admin_url, sizes, res)
            for phase in ("intake", "registry", "reads"):
                if phase in phases:
                    print(f"platform: {phase} ({d})", flush=True)
                    run_cluster(d, work, pg_admin_url, sizes, res, phase)
    finally:
        if keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            drop_created(pg_admin_url)
    return res, base


def median(values: list[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


@cli.command()
def main(
    quick: bool = typer.Option(False, help="smaller sizes"),
    dialect: str = typer.Option("both", help="sqlite | postgresql | both"),
    only: str = typer.Option("", help="comma list: baseline,placement,intake,registry,reads"),
    runs: int = typer.Option(1, help="run everything this often; print medians and spread"),
    pg_admin_url: str = typer.Option(
        os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    ),
    keep: bool = typer.Option(False, help="keep the work dir (logs)"),
    profile: Path | None = typer.Option(None, help="py-spy the services into this dir"),
) -> None:
    global PROFILE_DIR
    PROFILE_DIR = profile
    sizes = QUICK if quick else Sizes()
    dialects = ["sqlite", "postgresql"] if dialect == "both" else [dialect]
    phases = (
        set(only.split(",")) if only else {"baseline", "placement", "intake", "registry", "reads"}
    )
    loads: list[float] = []
    values: dict[str, list[float]] = {}
    bases: dict[str, list[float]] = {}
    units: dict[str, tuple[str, str]] = {}  # figure -> (unit, baseline name)
    for i in range(runs):
        loads.append(os.getloadavg()[0])
        print(
            f"job path bench: {'quick' if quick else 'full'} sizes, run {i + 1} of {runs}, "
            f"load {loads[-1]:.2f}",
            flush=True,
        )
        res, base = one_run(sizes, dialects, phases, pg_admin_url, keep)
        for name, unit, value, bname, _ in res.rows:
            values.setdefault(name, []).append(value)
            units[name] = (unit, bname)
        for bname, bv in base.items():
            bases.setdefault(bname, []).append(bv)
    spread = "min-max" if runs > 1 else ""
    print(
        f"\n{'figure':<52}{'median' if runs > 1 else 'value':>12}  {spread:<20}{'unit':<8}"
        f"{'baseline':<28}{'base':>10}{'ratio':>8}"
    )
    out: dict[str, Any] = {
        "sizes": sizes.__dict__,
        "runs": runs,
        "load_at_start": [round(x, 2) for x in loads],
        "figures": {},
    }
    for name, vs in values.items():
        unit, bname = units[name]
        value = median(vs)
        bv = median(bases[bname]) if bases.get(bname) else None
        ratio = value / bv if bv else None
        lo_hi = f"{min(vs):.1f}-{max(vs):.1f}" if runs > 1 else ""
        print(
            f"{name:<52}{value:>12.1f}  {lo_hi:<20}{unit:<8}{bname:<28}"
            f"{(f'{bv:.1f}' if bv else ''):>10}{(f'{ratio:.2f}' if ratio else ''):>8}"
        )
        out["figures"][name] = {
            "value": round(value, 2),
            "runs": [round(v, 2) for v in vs],
            "unit": unit,
            "baseline": bname or None,
            "baseline_value": round(bv, 2) if bv else None,
            "ratio": round(ratio, 3) if ratio else None,
        }
    print("JSON " + json.dumps(out))


if __name__ == "__main__":
    cli()
