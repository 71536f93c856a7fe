"""How fast the console's jobs page first renders with 10,000 jobs stored.

Starts the local cluster (SQLite, real processes on free ports), stores N jobs for one user in
the scheduler's own tables (through its ORM models: submitting 10,000 jobs through the queue
would only measure the scheduler), then opens the console in headless Chromium and reloads the
jobs page ``--rounds`` times. "First render" is the page's own ``dante:jobs-rendered``
performance mark: from navigation start to the first page of rows in the table, so it counts
loading the page and its modules, the silent session refresh, the API call and the rendering.

    .venv/bin/python bench/console_jobs_page.py --jobs 10000 --rounds 15
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
import typer

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from localdev.cluster import ClusterConfig, LocalCluster  # noqa: E402
from scheduler.models import Job, JobTag  # noqa: E402
from shared.db import utcnow  # noqa: E402
from tests.support.accounts import PASSWORD, new_user  # noqa: E402

STATES = ["completed"] * 7 + ["failed", "cancelled", "timed_out"]
TAGS = ["nightly", "vision", "nlp", "sweep", "eval", "etl"]


def seed(db_file: Path, owner_id: str, n: int) -> None:
    """N finished jobs over the last 30 days, as the scheduler stores them."""
    engine = sa.create_engine(f"sqlite:///{db_file}")
    now = utcnow()
    rng = random.Random(14)
    jobs, tags = [], []
    for i in range(n):
        job_id = str(uuid.uuid4())
        created = now - timedelta(seconds=rng.uniform(60, 30 * 86400))
        job_tags = rng.sample(TAGS, rng.randint(0, 2))
        jobs.append(
            {
                "id": job_id,
                "owner_id": owner_id,
                "type": "script",
                "name": f"job-{i:05d}",
                "state": rng.choice(STATES),
                "priority": 5,
                "attempt": 1,
                "max_retries": 3,
                "gpu_count": 0,
                "min_vram_mb": 0,
                "spec": {"type": "script", "name": f"job-{i:05d}", "resources": {}},
                "tags": job_tags,
                "gpu_indices": [],
                "artifacts": [],
                "exit_code": 0,
                "created_at": created,
                "updated_at": created + timedelta(seconds=30),
                "started_at": created + timedelta(seconds=2),
                "finished_at": created + timedelta(seconds=30),
            }
        )
        tags += [{"job_id": job_id, "tag": t} for t in job_tags]
    with engine.begin() as conn:
        conn.execute(sa.insert(Job), jobs)
        if tags:
            conn.execute(sa.insert(JobTag), tags)
    engine.dispose()


def main(
    jobs: int = typer.Option(10_000, help="jobs stored for the user"),
    rounds: int = typer.Option(15, help="page loads measured"),
    chromium: str = typer.Option("/usr/bin/chromium", help="the browser to drive"),
) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="console-bench-") as tmp:
        data = Path(tmp)
        cluster = LocalCluster(
            ClusterConfig(
                data_dir=data,
                prefer_default_ports=False,
                log_dir=data / "logs",
                daemons=0,
                extra_env={
                    f"DANTE_GATEWAY_RATE_LIMIT_{k}": "1000000"
                    for k in ("USER_PER_SECOND", "USER_BURST", "IP_PER_SECOND", "IP_BURST")
                },
            )
        )
        cluster.start()
        try:
            gw = cluster.gateway_url
            user = new_user(gw)
            t0 = time.perf_counter()
            seed(data / "db" / "scheduler.sqlite", user["user_id"], jobs)
            print(f"stored {jobs} jobs in {time.perf_counter() - t0:.1f} s")
            api_ms = []
            for _ in range(rounds):
                t = time.perf_counter()
                r = httpx.get(f"{gw}/api/v1/jobs?limit=25", headers=user["headers"])
                api_ms.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200 and len(r.json()["jobs"]) == 25
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"{gw}/#/signin")
                page.get_by_label("Username").fill(user["username"])
                page.get_by_label("Password").fill(PASSWORD)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_selector("main[data-rendered=jobs]")
                render_ms = []
                for _ in range(rounds):
                    page.goto(f"{gw}/#/jobs")
                    page.reload()  # a cold start of the page: modules, session, API, render
                    page.wait_for_selector("main[data-rendered=jobs]", timeout=60_000)
                    rows = page.locator("tr[data-job-id]").count()
                    assert rows == 25, rows
                    mark = page.evaluate(
                        "performance.getEntriesByName('dante:jobs-rendered')[0].startTime"
                    )
                    render_ms.append(mark)
                browser.close()
        finally:
            cluster.stop()

    def describe(values: list[float]) -> str:
        ordered = sorted(values)
        p90 = ordered[max(0, int(len(ordered) * 0.9) - 1)]
        return (
            f"median {statistics.median(ordered):.0f} ms, p90 {p90:.0f} ms, "
            f"max {ordered[-1]:.0f} ms"
        )

    print(f"GET /api/v1/jobs?limit=25 with {jobs} jobs stored ({rounds}x): {describe(api_ms)}")
    print(f"jobs page first render, navigation start to rows ({rounds}x): {describe(render_ms)}")


if __name__ == "__main__":
    typer.run(main)
