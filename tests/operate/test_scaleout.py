"""Scale-out under failure: 500 jobs through two gateways and two schedulers (PostgreSQL) to
three daemons over a 3-node JetStream cluster, while one NATS node is killed (SIGKILL) and
restarted and one scheduler is killed for good. Every accepted job must end terminal in the
scheduler's database, none may be missing, and no (job, attempt) may run twice: each job's
script appends "<job id> <attempt>" to one shared file, so a double run shows as a repeated line.

Kept as short as the assertion allows: quick scripts, a 5 s ack wait and a 20 s dispatch
deadline so the killed scheduler's work comes back fast. The bounds only stop a hung run.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import httpx
import pytest

from localdev.cluster import ClusterConfig
from tests.support import servers
from tests.support.accounts import new_user
from tests.support.scaleout import ScaleOutCluster
from tests.support.wait import eventually

JOBS = 500
TERMINAL = {"completed", "failed", "cancelled", "timed_out"}


@pytest.fixture(scope="module")
def scaled(
    pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScaleOutCluster]:
    data = tmp_path_factory.mktemp("scaleout")
    urls = {
        name: servers.asyncpg_url(servers.create_database(pg_admin_url, f"so_{name}"))
        for name in ("auth", "registry", "scheduler")
    }
    c = ScaleOutCluster(
        ClusterConfig(
            data_dir=data,
            prefer_default_ports=False,
            database_urls=urls,
            log_dir=data / "logs",
            heartbeat_interval=1.0,
            daemons=3,
        )
    )
    c.start()
    yield c
    c.stop()


async def job_states(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(servers.libpq_url(url))
    try:
        rows = await conn.fetch("SELECT id, state FROM jobs")
    finally:
        await conn.close()
    return {r["id"]: r["state"] for r in rows}


def submit(gw: str, headers: dict[str, str], runs: Path, i: int, refused: Counter) -> str | None:
    """Submit like a client: a refusal (503 while a NATS node fails over) is retried."""
    script = f'echo "$DANTE_JOB_ID $DANTE_ATTEMPT" >> {runs}; echo job {i}'
    body = {"type": "script", "name": f"so-{i}", "params": {"script_content": script}}
    for _ in range(30):
        try:
            r = httpx.post(f"{gw}/api/v1/jobs", json=body, headers=headers, timeout=30)
        except httpx.HTTPError as exc:
            refused[type(exc).__name__] += 1
        else:
            if r.status_code == 202:
                return r.json()["job_id"]
            refused[r.status_code] += 1
        time.sleep(0.5)
    return None


def test_500_jobs_survive_a_nats_node_and_a_scheduler_dying(
    scaled: ScaleOutCluster, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.log"
    runs.touch()
    gws = scaled.gateway_urls
    user = new_user(gws[0])
    db = scaled.config.database_urls["scheduler"]
    accepted: list[str] = []
    refused: Counter = Counter()
    victim = scaled.nodes[2]
    with ThreadPoolExecutor(8) as pool:
        futures = [
            pool.submit(submit, gws[i % 2], user["headers"], runs, i, refused) for i in range(JOBS)
        ]
        for n, f in enumerate(futures):
            if n == JOBS // 5:
                victim.kill()  # mid-submission: publishes and consumers fail over
            if n == JOBS // 2:
                scaled.process("scheduler-2").kill()  # SIGKILL: no drain, nothing acked
            if n == (3 * JOBS) // 5:
                victim.start()  # back with its store: it catches up from the others
            job_id = f.result()
            if job_id:
                accepted.append(job_id)
    assert len(accepted) == JOBS, f"only {len(accepted)} of {JOBS} accepted (refusals: {refused})"
    print(f"refusals retried during the failover: {dict(refused)}")

    def all_terminal() -> dict[str, str]:
        states = asyncio.run(job_states(db))
        missing = [j for j in accepted if j not in states]
        assert not missing, f"{len(missing)} accepted jobs never reached the job store"
        stuck = Counter(states[j] for j in accepted if states[j] not in TERMINAL)
        assert not stuck, f"not terminal: {stuck}"
        return states

    states = eventually(all_terminal, limit=600, interval=1, what="every accepted job terminal")
    ran = Counter(tuple(line.split()) for line in runs.read_text().splitlines() if line)
    twice = {k: n for k, n in ran.items() if n > 1}
    assert not twice, f"run twice in the same attempt: {twice}"
    completed = sum(states[j] == "completed" for j in accepted)
    assert completed == len(accepted), Counter(states[j] for j in accepted)
    assert victim.meta_leader(), "the restarted node rejoined the JetStream cluster"


def test_streams_are_replicated_on_every_node(scaled: ScaleOutCluster) -> None:
    """DANTE_NATS_STREAM_REPLICAS=3 made every stream the services use with 3 replicas."""
    import nats

    async def replicas() -> dict[str, int]:
        nc = await nats.connect([n.url for n in scaled.nodes if n.popen and n.popen.poll() is None])
        try:
            js = nc.jetstream()
            names = ("JOBS", "TASKS", "STATUS", "LOGS", "EVENTS")
            return {s: (await js.stream_info(s)).config.num_replicas for s in names}
        finally:
            await nc.close()

    assert asyncio.run(replicas()) == dict.fromkeys(
        ("JOBS", "TASKS", "STATUS", "LOGS", "EVENTS"), 3
    )
