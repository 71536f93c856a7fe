"""Cancelling a job through the gateway, and jobs no provider can ever run, on the shared
SQLite cluster (real processes: gateway, scheduler, registry, daemon, nats-server)."""

from __future__ import annotations

import os
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


def test_a_job_no_host_can_ever_run_fails_at_once_saying_what_the_fleet_offers(
    default_cluster: LocalCluster,
) -> None:
    gw = default_cluster.gateway_url
    user = new_user(gw)
    # the cluster's one daemon runs here: this machine's memory, and no Docker engine
    host_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    script = {"type": "script", "params": {"script_content": "true"}}
    huge = submit(gw, user, {**script, "resources": {"memory_mb": 10_000_000}})
    job = jobs.wait_terminal(gw, user["headers"], huge)
    assert job["status"] == "failed" and job["provider_id"] is None
    assert job["error"] == f"no provider offers 10000000 MB memory (largest: {host_mb} MB)"
    boxed = submit(gw, user, {"type": "container", "params": {"docker_image": "alpine:3"}})
    job = jobs.wait_terminal(gw, user["headers"], boxed)
    assert job["status"] == "failed" and job["provider_id"] is None
    assert job["error"] == (
        "no provider offers container jobs (no provider has a Docker engine that answers)"
    )
    fleet = httpx.get(f"{gw}/api/v1/providers", headers=user["headers"])
    assert fleet.status_code == 200, fleet.text
    mine = [
        p for p in fleet.json()["providers"] if p["id"] == default_cluster.provider["provider_id"]
    ]
    assert [(p["docker"], p["memory_mb"]) for p in mine] == [(False, host_mb)]
