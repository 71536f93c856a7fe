"""Jobs through the gateway of a running cluster, as a user with curl would."""

from __future__ import annotations

from typing import Any

import httpx

from shared.contracts import TERMINAL_STATES
from tests.support.wait import eventually


def job(gw: str, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    """The job as its owner sees it; ``{}`` while it is not stored yet (just published: 404)."""
    r = httpx.get(f"{gw}/api/v1/jobs/{job_id}", headers=headers)
    if r.status_code == 404:
        return {}
    assert r.status_code == 200, r.text
    return r.json()


def wait_status(gw: str, headers: dict[str, str], job_id: str, *states: str) -> dict[str, Any]:
    """Wait until the job is in one of ``states``; the bound only stops a hung run."""

    def reached() -> dict[str, Any] | None:
        got = job(gw, headers, job_id)
        return got if got.get("status") in states else None

    return eventually(reached, interval=0.1, what=f"job {job_id} in {states}")


def wait_terminal(gw: str, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    """Wait until the job ends (completed, failed, cancelled or timed out)."""
    return wait_status(gw, headers, job_id, *TERMINAL_STATES)
