"""A GPU daemon that restarts re-registers with the same provider id and comes back online
(issue 18): the real registry app with its real migrations on SQLite and PostgreSQL, a real
nats-server, and the GPU inventory the daemon builds from NVML (the autospecced pynvml double
of tests/daemon, since no GPU exists here)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from provider_daemon.inventory import Nvml, collect
from provider_registry.main import create_app
from provider_registry.settings import RegistrySettings
from tests.support.nvml import FakeGpu, fake_nvml
from tests.support.wait import eventually_async


@pytest.fixture
async def registry(
    nats_url: str, db_url: str, local_jwks: Callable[[], Any]
) -> AsyncIterator[httpx.AsyncClient]:
    # A short TTL so a daemon that stopped heartbeating is swept offline within the test.
    settings = RegistrySettings(
        database_url=db_url,
        nats_url=nats_url,
        heartbeat_ttl_seconds=0.5,
        sweep_interval_seconds=0.2,
    )
    app = create_app(settings, jwks=local_jwks)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
            yield client


def registration(gpu_indices: list[int]) -> dict[str, Any]:
    """The body ``provider_daemon`` sends on start, from an NVML inventory."""
    nvml = Nvml(fake_nvml([FakeGpu(i) for i in gpu_indices]))
    try:
        inventory = collect(nvml)
    finally:
        nvml.close()
    assert len(inventory.gpus) == len(gpu_indices)
    return {"name": "gpu-host", "hostname": "gpu-host-1", **inventory.registration()}


async def wait_status(
    client: httpx.AsyncClient, pid: str, headers: dict[str, str], status: str
) -> dict[str, Any]:

    async def reached() -> dict[str, Any]:
        r = await client.get(f"/api/v1/providers/{pid}", headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == status, r.json()
        return r.json()

    return await eventually_async(reached)


async def test_a_restarted_gpu_daemon_is_online_again_with_same_and_changed_gpus(
    registry: httpx.AsyncClient, mint_token: Callable[..., str]
) -> None:
    owner, pid = str(uuid.uuid4()), str(uuid.uuid4())
    daemon = {"authorization": f"Bearer {mint_token('provider', owner, provider_id=pid)}"}
    body = registration([0, 1, 2, 3])
    r = await registry.post("/api/v1/providers", json=body, headers=daemon)
    assert r.status_code == 201, r.text
    hb = {"gpus": [{"index": i, "utilization_pct": 50.0, "temperature_c": 60.0} for i in range(4)]}
    r = await registry.post(f"/providers/{pid}/heartbeat", json=hb, headers=daemon)
    assert r.status_code == 200 and r.json()["gpus"][2]["metrics"]["utilization_pct"] == 50.0

    # The daemon dies; the sweep takes the provider offline.
    await wait_status(registry, pid, daemon, "offline")

    # It restarts with the same GPUs: the registration is accepted and the provider is online.
    r = await registry.post("/api/v1/providers", json=body, headers=daemon)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["id"] == pid and got["status"] == "online"
    assert [g["index"] for g in got["gpus"]] == [0, 1, 2, 3]
    assert all(g["metrics"] == {} and g["name"] == "NVIDIA H100" for g in got["gpus"])
    # its first heartbeat finds it online, with fresh metrics
    r = await registry.post(f"/providers/{pid}/heartbeat", json=hb, headers=daemon)
    assert r.status_code == 200 and r.json()["status"] == "online"
    assert r.json()["gpus"][3]["metrics"]["temperature_c"] == 60.0

    # Restarts again with a changed inventory: GPU 1 gone, GPUs 4 and 5 new.
    await wait_status(registry, pid, daemon, "offline")
    changed = registration([0, 1, 2, 3, 4, 5])
    changed["gpus"] = [g for g in changed["gpus"] if g["index"] != 1]
    changed["gpus"][0]["healthy"] = False
    r = await registry.post("/api/v1/providers", json=changed, headers=daemon)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["status"] == "online"
    assert [g["index"] for g in got["gpus"]] == [0, 2, 3, 4, 5]
    assert got["gpus"][0]["healthy"] is False
    hb = {"gpus": [{"index": i, "utilization_pct": 7.0} for i in (0, 2, 3, 4, 5)]}
    r = await registry.post(f"/providers/{pid}/heartbeat", json=hb, headers=daemon)
    assert r.status_code == 200 and r.json()["status"] == "online"
    assert r.json()["gpus"][4]["metrics"] == {"utilization_pct": 7.0}
    # what every reader sees: the same provider, once, with the new GPUs
    listed = await registry.get("/api/v1/providers", params={"gpu_model": "*H100*"}, headers=daemon)
    mine = [p for p in listed.json()["providers"] if p["id"] == pid]
    assert len(mine) == 1 and len(mine[0]["gpus"]) == 5
