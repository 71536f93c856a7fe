"""A second start on the same data dir (a second `make dev`) reuses everything."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from localdev.cluster import ClusterConfig, LocalCluster
from tests.support.cluster import cluster_config
from tests.support.jobs import wait_status


def _config(data: Path) -> ClusterConfig:
    return cluster_config(data)


def test_second_start_reuses_data_and_identity(tmp_path: Path) -> None:
    first = LocalCluster(_config(tmp_path))
    first.start()
    try:
        gw = first.gateway_url
        name = f"r{uuid.uuid4().hex[:8]}"
        creds = {"username": name, "password": "long enough pw"}
        httpx.post(
            f"{gw}/api/v1/auth/register", json={**creds, "email": f"{name}@example.com"}
        ).raise_for_status()
        token = httpx.post(f"{gw}/api/v1/auth/login", json=creds).json()["access_token"]
        headers = {"authorization": f"Bearer {token}"}
        job_id = httpx.post(
            f"{gw}/api/v1/jobs",
            json={"type": "script", "name": "x", "params": {"script_content": "echo kept"}},
            headers=headers,
        ).json()["job_id"]
        wait_status(gw, headers, job_id, "completed")
        provider_id = first.provider["provider_id"]
    finally:
        first.stop()
    assert not any(p.popen.poll() is None for p in first.procs)

    second = LocalCluster(_config(tmp_path))
    second.start()
    try:
        gw = second.gateway_url
        # The same account logs in, the old token still verifies (same signing key), the job
        # and its log are still there, and the daemon came back as the same provider.
        assert httpx.post(f"{gw}/api/v1/auth/login", json=creds).status_code == 200
        job = httpx.get(f"{gw}/api/v1/jobs/{job_id}", headers=headers)
        assert job.status_code == 200 and job.json()["status"] == "completed"
        logs = httpx.get(f"{gw}/api/v1/jobs/{job_id}/logs", headers=headers)
        assert logs.text == "kept\n"
        assert second.provider["provider_id"] == provider_id
        p = httpx.get(f"{gw}/api/v1/providers/{provider_id}", headers=headers).json()
        assert p["status"] == "online"
    finally:
        second.stop()
