"""A job's inputs, outputs and log travel through storage, end to end on real processes.

The requester uploads an input, the scheduler presigns exactly the job's declared objects, the
daemon downloads and uploads through those URLs (it holds no token), and the owner reads the
results back from storage. Everything goes through the gateway.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from localdev.cluster import LocalCluster
from tests.support.accounts import new_user
from tests.support.jobs import wait_terminal

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(default_cluster: LocalCluster) -> LocalCluster:
    """The shared SQLite cluster (``tests/support/cluster.py``)."""
    return default_cluster


def _submit(gw: str, headers: dict[str, str], script: str, **spec: Any) -> str:
    body = {"type": "script", "name": "io", "params": {"script_content": script}, **spec}
    r = httpx.post(f"{gw}/api/v1/jobs", json=body, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def test_inputs_are_read_and_outputs_and_log_land_in_the_owners_storage(
    cluster: LocalCluster,
) -> None:
    gw = cluster.gateway_url
    owner, stranger = new_user(gw)["headers"], new_user(gw)["headers"]
    put = httpx.put(
        f"{gw}/api/v1/storage/objects/data/words.txt",
        content=b"alpha\nbeta\n",
        headers={**owner, "content-type": "text/plain"},
    )
    assert put.status_code in (200, 201), put.text

    script = (
        'tr a-z A-Z < "$DANTE_INPUTS_DIR/data/words.txt" > "$DANTE_OUTPUTS_DIR/results/upper.txt"\n'
        "echo converted\n"
    )
    job_id = _submit(
        gw,
        owner,
        'mkdir -p "$DANTE_OUTPUTS_DIR/results"\n' + script,
        inputs=["data/words.txt"],
        outputs=["results/upper.txt"],
    )
    job = wait_terminal(gw, owner, job_id)
    assert job["status"] == "completed", job

    log_key = f"jobs/{job_id}/attempt-1.log"
    assert {(a["key"], a["kind"]) for a in job["artifacts"]} == {
        ("results/upper.txt", "output"),
        (log_key, "log"),
    }
    out = httpx.get(f"{gw}/api/v1/storage/objects/results/upper.txt", headers=owner)
    assert out.status_code == 200 and out.content == b"ALPHA\nBETA\n"
    log = httpx.get(f"{gw}/api/v1/storage/objects/{log_key}", headers=owner)
    assert log.status_code == 200 and log.text == "converted\n"

    # the results are the owner's alone
    for key in ("results/upper.txt", log_key):
        assert httpx.get(f"{gw}/api/v1/storage/objects/{key}", headers=stranger).status_code == 404


def test_a_job_whose_input_is_missing_fails_with_a_clear_reason(cluster: LocalCluster) -> None:
    gw = cluster.gateway_url
    owner = new_user(gw)["headers"]
    job_id = _submit(gw, owner, "echo never", inputs=["data/not-there.csv"])
    job = wait_terminal(gw, owner, job_id)
    assert job["status"] == "failed", job
    assert "data/not-there.csv" in (job.get("error") or ""), job


def test_a_declared_output_the_job_never_wrote_is_not_listed(cluster: LocalCluster) -> None:
    gw = cluster.gateway_url
    owner = new_user(gw)["headers"]
    job_id = _submit(gw, owner, "echo nothing written", outputs=["results/missing.bin"])
    job = wait_terminal(gw, owner, job_id)
    assert job["status"] == "completed", job
    assert [a["key"] for a in job["artifacts"]] == [f"jobs/{job_id}/attempt-1.log"]
    missing = httpx.get(f"{gw}/api/v1/storage/objects/results/missing.bin", headers=owner)
    assert missing.status_code == 404
