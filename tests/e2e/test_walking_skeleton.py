"""The walking skeleton end to end: the local cluster as real processes on real sockets.

Runs once on SQLite and once on PostgreSQL. Everything goes through the gateway only, as a
user with curl would.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from localdev.cluster import LocalCluster
from tests.support import jobs
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def cluster(
    request: pytest.FixtureRequest, default_cluster: LocalCluster, pg_cluster: LocalCluster
) -> LocalCluster:
    """The shared cluster of each dialect (``tests/support/cluster.py``)."""
    return default_cluster if request.param == "sqlite" else pg_cluster


def _user(gw: str, role: str = "requester") -> dict[str, Any]:
    name = f"u{uuid.uuid4().hex[:10]}"
    password = "correct horse battery"
    r = httpx.post(
        f"{gw}/api/v1/auth/register",
        json={"username": name, "email": f"{name}@example.com", "password": password, "role": role},
    )
    assert r.status_code == 201, r.text
    assert r.json()["role"] == role
    login = httpx.post(f"{gw}/api/v1/auth/login", json={"username": name, "password": password})
    assert login.status_code == 200, login.text
    body = login.json()
    assert body["token"] == body["access_token"] and body["token_type"] == "bearer"
    return {"headers": {"authorization": f"Bearer {body['access_token']}"}, **body}


def _submit(gw: str, user: dict[str, Any], script: str, **extra: Any) -> str:
    r = httpx.post(
        f"{gw}/api/v1/jobs",
        json={"type": "script", "name": "hello", "params": {"script_content": script}},
        headers={**user["headers"], **extra.pop("headers", {})},
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["job_id"] and body["timestamp"]
    return body["job_id"]


def _wait_terminal(gw: str, user: dict[str, Any], job_id: str) -> dict:
    return jobs.wait_terminal(gw, user["headers"], job_id)


def test_script_job_completes_with_its_output(cluster: LocalCluster) -> None:
    gw = cluster.gateway_url
    user = _user(gw)
    job_id = _submit(gw, user, "echo hello; python3 -c 'print(6*7)'")
    job = _wait_terminal(gw, user, job_id)
    assert job["status"] == "completed", job
    assert job["exit_code"] == 0
    assert job["provider_id"] == cluster.provider["provider_id"]
    assert job["attempt"] == 1
    logs = httpx.get(f"{gw}/api/v1/jobs/{job_id}/logs", headers=user["headers"])
    assert logs.status_code == 200
    assert logs.headers["content-type"].startswith("text/plain")
    assert logs.text.splitlines() == ["hello", "42"]
    events = httpx.get(f"{gw}/api/v1/jobs/{job_id}/events", headers=user["headers"]).json()
    assert [e["to"] for e in events["events"]] == ["queued", "dispatched", "running", "completed"]


def test_failing_script_reports_its_exit_code(cluster: LocalCluster) -> None:
    gw = cluster.gateway_url
    user = _user(gw)
    job = _wait_terminal(gw, user, _submit(gw, user, "echo about to fail; exit 3"))
    assert job["status"] == "failed"
    assert job["exit_code"] == 3


def test_follow_streams_lines_until_the_job_ends(cluster: LocalCluster) -> None:
    gw = cluster.gateway_url
    user = _user(gw)
    job_id = _submit(gw, user, "for i in 1 2 3; do echo line-$i; sleep 0.2; done")
    lines = []
    eventually(lambda: jobs.job(gw, user["headers"], job_id), what="job stored")  # a few ms after
    with httpx.stream(
        "GET",
        f"{gw}/api/v1/jobs/{job_id}/logs",
        params={"follow": "true"},
        headers=user["headers"],
        timeout=60,
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        for raw in resp.iter_lines():
            if raw.startswith('data: "'):
                lines.append(raw[len('data: "') : -1])
            if raw == "event: end":
                break
    assert lines == ["line-1", "line-2", "line-3"]


def test_other_users_cannot_see_a_job(cluster: LocalCluster) -> None:
    gw = cluster.gateway_url
    owner, other = _user(gw), _user(gw)
    job_id = _submit(gw, owner, "true")
    _wait_terminal(gw, owner, job_id)
    assert httpx.get(f"{gw}/api/v1/jobs/{job_id}", headers=other["headers"]).status_code == 404
    logs = httpx.get(f"{gw}/api/v1/jobs/{job_id}/logs", headers=other["headers"])
    assert logs.status_code == 404 and logs.json()["error"] == "not_found"


def test_registry_holds_the_daemon_with_fresh_heartbeats(cluster: LocalCluster) -> None:
    gw = cluster.gateway_url
    user = _user(gw)
    pid = cluster.provider["provider_id"]
    first = httpx.get(f"{gw}/api/v1/providers/{pid}", headers=user["headers"])
    assert first.status_code == 200, first.text
    p = first.json()
    assert p["status"] == "online"
    assert p["gpus"] == []  # no NVIDIA GPU on this machine: CPU only
    assert p["cpu_count"] == os.cpu_count()
    assert p["memory_mb"] > 0

    def heartbeat() -> bool:
        again = httpx.get(f"{gw}/api/v1/providers/{pid}", headers=user["headers"]).json()
        return again["last_heartbeat_at"] > p["last_heartbeat_at"]

    eventually(heartbeat, interval=0.2, what="a newer heartbeat")
    listed = httpx.get(
        f"{gw}/api/v1/providers", params={"status": "online"}, headers=user["headers"]
    ).json()
    assert pid in [x["id"] for x in listed["providers"]]


def test_correlation_id_reaches_the_daemon(cluster: LocalCluster) -> None:
    gw = cluster.gateway_url
    user = _user(gw)
    cid = f"e2e-{uuid.uuid4().hex[:12]}"
    job_id = _submit(gw, user, "echo traced", headers={"x-request-id": cid})
    _wait_terminal(gw, user, job_id)
    log_dir: Path = cluster.config.log_dir  # type: ignore[assignment]
    daemon_lines = [
        line for line in (log_dir / "daemon.log").read_text().splitlines() if job_id in line
    ]
    assert daemon_lines, "the daemon logged nothing for the job"
    assert all(cid in line for line in daemon_lines if "task." in line)
    scheduler_log = (log_dir / "scheduler.log").read_text()
    assert any(cid in line and job_id in line for line in scheduler_log.splitlines())


@pytest.mark.parametrize("name", ["gateway", "auth", "registry", "scheduler", "storage", "daemon"])
def test_every_service_serves_health_ready_metrics_openapi(
    cluster: LocalCluster, name: str
) -> None:
    base = f"http://127.0.0.1:{cluster.ports[name]}"
    assert httpx.get(f"{base}/health").json()["status"] == "ok"
    ready = httpx.get(f"{base}/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    metrics = httpx.get(f"{base}/metrics")
    assert "dante_http_requests_total" in metrics.text
    # the gateway's is built on first request from every service's app (seconds on a busy VM)
    openapi = httpx.get(f"{base}/openapi.json", timeout=120)
    assert openapi.json()["openapi"].startswith("3.")


def test_a_service_called_directly_without_a_token_refuses(cluster: LocalCluster) -> None:
    scheduler = f"http://127.0.0.1:{cluster.ports['scheduler']}"
    r = httpx.get(f"{scheduler}/api/v1/jobs")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    forged = httpx.get(f"{scheduler}/api/v1/jobs", headers={"x-user-id": "someone"})
    assert forged.status_code == 401
