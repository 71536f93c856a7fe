"""PostgreSQL stops for 60 s while requesters keep submitting (issue 18): every job the gateway
answered 202 for is stored and ends terminal once the database is back. The whole local
cluster runs as real processes with auth, registry and scheduler on a throwaway PostgreSQL this
test starts (and stops) itself; one real provider daemon runs the jobs."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from localdev.cluster import ClusterConfig, LocalCluster
from tests.support.accounts import new_user
from tests.support.pg_control import controlled_postgres
from tests.support.servers import asyncpg_url, create_database
from tests.support.wait import eventually

OUTAGE_SECONDS = 60
TERMINAL = {"completed", "failed", "cancelled", "timed_out"}


def submit(gw: str, headers: dict[str, str], n: int) -> str | None:
    body = {"type": "script", "name": f"outage-{n}", "params": {"script_content": f"echo {n}"}}
    try:
        r = httpx.post(f"{gw}/api/v1/jobs", json=body, headers=headers, timeout=10)
    except httpx.HTTPError:
        return None
    return r.json()["job_id"] if r.status_code == 202 else None


def test_every_accepted_job_survives_a_60s_database_outage(tmp_path: Path) -> None:
    try:
        outage_pg = controlled_postgres()
        pg = outage_pg.__enter__()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"cannot start a throwaway PostgreSQL: {exc}")
    try:
        urls = {
            name: asyncpg_url(create_database(pg.url, name))
            for name in ("auth", "registry", "scheduler")
        }
        cluster = LocalCluster(
            ClusterConfig(
                data_dir=tmp_path,
                prefer_default_ports=False,
                log_dir=tmp_path / "logs",
                heartbeat_interval=1,
                database_urls=urls,
                nats_auth=False,
            )
        )
        cluster.start()
        try:
            gw = cluster.gateway_url
            user = new_user(gw)
            accepted: list[str] = []
            n = 0

            def submit_for(seconds: float) -> None:
                nonlocal n
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    n += 1
                    if job_id := submit(gw, user["headers"], n):
                        accepted.append(job_id)
                    time.sleep(1.0)

            submit_for(5)
            before = len(accepted)
            pg.stop()
            submit_for(OUTAGE_SECONDS)
            during = len(accepted) - before
            pg.start()
            submit_for(5)
            # The gateway kept accepting while the database was away (it only publishes).
            assert before >= 2 and during >= OUTAGE_SECONDS // 3, (before, during)

            pending = set(accepted)
            states: dict[str, str] = {}

            def all_terminal() -> bool:
                for job_id in list(pending):
                    r = httpx.get(f"{gw}/api/v1/jobs/{job_id}", headers=user["headers"])
                    if r.status_code == 200 and r.json()["status"] in TERMINAL:
                        states[job_id] = r.json()["status"]
                        pending.discard(job_id)
                assert not pending, f"{len(pending)} of {len(accepted)} accepted jobs not terminal"
                return True

            eventually(all_terminal, limit=600, interval=1)  # the bound only stops a hung run
            # Nothing was given up on: every job ran.
            assert set(states.values()) == {"completed"}, states
        finally:
            cluster.stop()
    finally:
        outage_pg.__exit__(None, None, None)
