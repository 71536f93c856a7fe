"""Helpers the console's browser tests share: jobs and accounts through the public API."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from typing import Any

import httpx

from tests.support.accounts import PASSWORD, new_user


def submit(gw: str, user: dict[str, Any], name: str, script: str, **spec: Any) -> str:
    body = {"type": "script", "name": name, "params": {"script_content": script}, **spec}
    r = httpx.post(f"{gw}/api/v1/jobs", json=body, headers=user["headers"])
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def named_user(gw: str, prefix: str) -> dict[str, Any]:
    """Like ``new_user``, with a readable name (it shows in the screenshots)."""
    name = f"{prefix}.{uuid.uuid4().hex[:4]}"
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    assert httpx.post(f"{gw}/api/v1/auth/register", json=body).status_code == 201
    login = httpx.post(f"{gw}/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    token = login.json()["access_token"]
    return {"username": name, "headers": {"authorization": f"Bearer {token}"}}


def fetch_job(gw: str, user: dict[str, Any], job_id: str) -> dict:
    r = httpx.get(f"{gw}/api/v1/jobs/{job_id}", headers=user["headers"])
    return r.json() if r.status_code == 200 else {}


def wait_state(gw: str, user: dict[str, Any], job_id: str, states: set[str]) -> dict:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        r = httpx.get(f"{gw}/api/v1/jobs/{job_id}", headers=user["headers"])
        if r.status_code == 200 and r.json()["status"] in states:
            return r.json()
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {states}")


def gpu_host(
    gw: str,
    name: str,
    model: str,
    vram_mb: int,
    count: int,
    price: float,
    owner: dict[str, Any] | None = None,
    busy: int = 0,
) -> dict:
    """A GPU host registered through the public API, as a daemon on it would (there is no
    NVIDIA GPU on this machine): inventory, then a heartbeat with per-GPU metrics."""
    provider = owner or new_user(gw, "provider")
    key = httpx.post(
        f"{gw}/api/v1/auth/api-keys", json={"name": name}, headers=provider["headers"]
    ).json()
    token = httpx.post(f"{gw}/api/v1/auth/token", json={"api_key": key["api_key"]}).json()
    auth = {"authorization": f"Bearer {token['access_token']}"}
    gpus = [
        {
            "index": i,
            "uuid": f"GPU-{uuid.uuid4()}",
            "name": model,
            "memory_total_mb": vram_mb,
            "compute_capability": "9.0",
        }
        for i in range(count)
    ]
    body = {
        "name": name,
        "hostname": f"{name}.dc1.example",
        "cpu_count": 64,
        "memory_mb": 512 * 1024,
        "max_concurrent_tasks": count,
        "price_per_hour": price,
        "driver_version": "550.90.07",
        "cuda_version": "12.4",
        "gpus": gpus,
    }
    r = httpx.post(f"{gw}/api/v1/providers", json=body, headers=auth)
    assert r.status_code in (200, 201), r.text
    # the first ``busy`` GPUs look loaded (the test places that many there), the rest idle
    metrics = [
        {
            "index": i,
            "utilization_pct": [97, 91, 88, 94][i % 4] if i < busy else [0, 2, 0, 1][i % 4],
            "memory_used_mb": vram_mb * ([0.91, 0.84, 0.87, 0.9][i % 4] if i < busy else 0.01),
            "temperature_c": [78, 74, 76, 79][i % 4] if i < busy else [34, 36, 33, 35][i % 4],
            "power_draw_w": 380.0 if i < busy else 62.0,
        }
        for i in range(count)
    ]
    url = f"{gw}/api/v1/providers/{key['provider_id']}/heartbeat"
    beat = httpx.post(url, json={"gpus": metrics, "running_tasks": 0}, headers=auth)
    assert beat.status_code == 200, beat.text
    stop = threading.Event()

    def keep_beating() -> None:  # as its daemon would, so the host stays live while we look
        while not stop.wait(2.0):
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(url, json={"gpus": metrics, "running_tasks": 0}, headers=auth)

    threading.Thread(target=keep_beating, daemon=True).start()
    return {"provider_id": key["provider_id"], "auth": auth, "stop": stop}
