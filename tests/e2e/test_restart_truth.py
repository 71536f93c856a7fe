"""A job's state stays true when its daemon restarts (issue 19), with real processes: a daemon
SIGKILLed and restarted at once reports what it holds and the scheduler requeues the job it no
longer runs; an attempt requeued while the daemon was away never starts when it returns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from localdev.cluster import LocalCluster
from tests.support.accounts import new_user
from tests.support.cluster import kill_daemon, restart_daemon
from tests.support.jobs import wait_status, wait_terminal
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(default_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The shared cluster (its TTL of 30 s is far longer than a restart: only reconciliation
    can notice one); its daemon is running again afterwards, whatever the test did to it."""
    yield default_cluster
    if default_cluster.process(default_cluster.daemon_name(1)).poll() is not None:
        restart_daemon(default_cluster)


def _submit(gw: str, auth: dict[str, str], script: str) -> str:
    r = httpx.post(
        f"{gw}/api/v1/jobs",
        json={"type": "script", "name": "truth", "params": {"script_content": script}},
        headers=auth,
    )
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def _events(gw: str, auth: dict[str, str], job_id: str) -> list[dict]:
    r = httpx.get(f"{gw}/api/v1/jobs/{job_id}/events", headers=auth)
    assert r.status_code == 200, r.text
    return [e for e in r.json()["events"] if e["from"] != e["to"]]


def test_a_daemon_killed_and_restarted_at_once_gets_its_job_back(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    gw = cluster.gateway_url
    auth = new_user(gw)["headers"]
    marker = tmp_path / "runs"
    job_id = _submit(gw, auth, f'echo "$DANTE_ATTEMPT" >> {marker}; sleep 1.5')
    wait_status(gw, auth, job_id, "running")
    eventually(lambda: marker.exists() and marker.read_text(), what="attempt 1 started")

    kill_daemon(cluster)
    restart_daemon(cluster)  # back long before the 30 s TTL could sweep it offline

    job = wait_terminal(gw, auth, job_id)
    assert job["status"] == "completed", job
    assert job["attempt"] == 2
    evs = _events(gw, auth, job_id)
    requeue = [e for e in evs if e["from"] == "running" and e["to"] == "queued"]
    assert len(requeue) == 1 and "reconciled" in requeue[0]["cause"], evs
    assert [e["to"] for e in evs if e["attempt"] == 2] == ["dispatched", "running", "completed"]
    assert marker.read_text().split() == ["1", "2"]


def test_an_attempt_requeued_while_the_daemon_was_away_never_starts(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    gw = cluster.gateway_url
    owner = cluster.provider
    login = httpx.post(
        f"{gw}/api/v1/auth/login",
        json={"username": owner["username"], "password": owner["password"]},
    )
    assert login.status_code == 200, login.text
    provider_auth = {"authorization": f"Bearer {login.json()['access_token']}"}
    auth = new_user(gw)["headers"]
    marker = tmp_path / "runs"

    kill_daemon(cluster)
    # still online for the registry: attempt 1's task waits in TASKS for the dead daemon
    job_id = _submit(gw, auth, f'echo "$DANTE_ATTEMPT" >> {marker}')
    assert wait_status(gw, auth, job_id, "dispatched")["attempt"] == 1
    # the owner takes the host out of service: attempt 1 is requeued (its task is still queued
    # on the host's subject, and its start deadline is a minute away)
    r = httpx.put(
        f"{gw}/api/v1/providers/{owner['provider_id']}/status",
        json={"status": "maintenance"},
        headers=provider_auth,
    )
    assert r.status_code == 200, r.text
    assert wait_status(gw, auth, job_id, "queued")["attempt"] == 2

    restart_daemon(cluster)  # registers online again: attempt 2 goes to the same host

    job = wait_terminal(gw, auth, job_id)
    assert job["status"] == "completed" and job["attempt"] == 2, job
    assert marker.read_text().split() == ["2"]  # attempt 1's command never ran
    # nor was its process ever spawned (killed too fast to write, it would still log this)
    assert cluster.config.log_dir is not None
    started = [
        line
        for line in (cluster.config.log_dir / "daemon.log").read_text().splitlines()
        if "task.started" in line and f"job_id={job_id}" in line
    ]
    assert len(started) == 1 and "attempt=2" in started[0], started
    evs = _events(gw, auth, job_id)
    assert [(e["to"], e["attempt"]) for e in evs] == [
        ("queued", 1),
        ("dispatched", 1),
        ("queued", 1),
        ("dispatched", 2),
        ("running", 2),
        ("completed", 2),
    ]
