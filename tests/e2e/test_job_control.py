"""Cancelling a job through the gateway, and jobs no provider can ever run, on the shared
SQLite cluster (real processes: gateway, scheduler, registry, daemon, nats-server)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from localdev.cluster import LocalCluster
from tests.support import jobs
from tests.support.accounts import new_user
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e


def submit(gw: str, user: dict[str, Any], body: dict[str, Any]) -> str:
    r = httpx.post(f"{gw}/api/v1/jobs", json={"name": "control", **body}, headers=user["headers"])
    assert r.status_code == 202, r.text
    job_id: str = r.json()["job_id"]
    return job_id


def log_text(gw: str, user: dict[str, Any], job_id: str) -> str:
    r = httpx.get(f"{gw}/api/v1/jobs/{job_id}/logs", headers=user["headers"])
    assert r.status_code == 200, r.text
    return r.text


@pytest.mark.parametrize("how", ["POST cancel", "DELETE"])
def test_cancel_lets_the_job_trap_sigterm_and_a_second_cancel_is_refused(
    default_cluster: LocalCluster, how: str
) -> None:
    gw = default_cluster.gateway_url
    user = new_user(gw)
    script = "trap 'echo got-term; exit 0' TERM\necho ready\nsleep 300\necho never\n"
    job_id = submit(gw, user, {"type": "script", "params": {"script_content": script}})
    jobs.wait_status(gw, user["headers"], job_id, "running")
    eventually(lambda: "ready" in log_text(gw, user, job_id), what="the job's first line")
    url = f"{gw}/api/v1/jobs/{job_id}"
    first = (
        httpx.delete(url, headers=user["headers"])
        if how == "DELETE"
        else httpx.post(f"{url}/cancel", headers=user["headers"])
    )
    assert first.status_code == 202, first.text
    assert first.json()["job_id"] == job_id and first.json()["status"] == "cancelled"
    # the job's own handler ran: SIGTERM first, not SIGKILL
    eventually(lambda: "got-term" in log_text(gw, user, job_id), what="got-term in the log")
    lines = log_text(gw, user, job_id).splitlines()
    assert lines[0] == "ready" and lines[-1] == "got-term" and "never" not in lines
    assert jobs.job(gw, user["headers"], job_id)["status"] == "cancelled"
    for again in (
        httpx.post(f"{url}/cancel", headers=user["headers"]),
        httpx.delete(url, headers=user["headers"]),
    ):
        assert again.status_code == 409, again.text
        assert again.json() == {
            "error": "job_already_ended",
            "detail": "job is already cancelled; there is nothing to cancel",
        }


def test_grace_seconds_is_bounded(default_cluster: LocalCluster) -> None:
    gw = default_cluster.gateway_url
    user = new_user(gw)
    body = {"type": "script", "name": "g", "params": {"script_content": "true"}}
    for bad in (-1, 3601):
        r = httpx.post(
            f"{gw}/api/v1/jobs", json={**body, "grace_seconds": bad}, headers=user["headers"]
        )
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"][-1] == "grace_seconds"
