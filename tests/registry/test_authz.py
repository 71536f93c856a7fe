"""The registry (in-process, real NATS and SQLite) lets a provider token act only for its own
provider: register, heartbeat, status and delete of another provider → 403."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from provider_registry.main import create_app
from provider_registry.settings import RegistrySettings
from tests.support.asgi import served


@pytest.fixture
async def registry(
    nats_url: str, tmp_path: Path, local_jwks: Callable[[], Any]
) -> AsyncIterator[httpx.AsyncClient]:
    settings = RegistrySettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/registry.sqlite", nats_url=nats_url
    )
    app = create_app(settings, jwks=local_jwks)
    async with served(app, "http://registry") as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_a_provider_token_acts_only_for_its_own_provider(
    registry: httpx.AsyncClient, mint_token: Callable[..., str]
) -> None:
    owner = str(uuid.uuid4())
    pid_a, pid_b = str(uuid.uuid4()), str(uuid.uuid4())
    daemon_a = _bearer(mint_token("provider", owner, provider_id=pid_a))
    daemon_b = _bearer(mint_token("provider", owner, provider_id=pid_b))
    body = {"name": "host", "gpus": [{"index": 0, "name": "H100", "memory_total_mb": 81920}]}
    r = await registry.post("/api/v1/providers", json=body, headers=daemon_a)
    assert r.status_code == 201 and r.json()["id"] == pid_a
    r = await registry.post("/api/v1/providers", json=body, headers=daemon_b)
    assert r.status_code == 201 and r.json()["id"] == pid_b
    hb = {"gpus": [{"index": 0, "utilization_pct": 5}]}
    # own provider: allowed
    assert (
        await registry.post(f"/providers/{pid_a}/heartbeat", json=hb, headers=daemon_a)
    ).status_code == 200
    status = {"status": "maintenance"}
    assert (
        await registry.put(f"/providers/{pid_a}/status", json=status, headers=daemon_a)
    ).status_code == 200
    # the sibling host's token, same owner: refused
    r = await registry.post(f"/providers/{pid_a}/heartbeat", json=hb, headers=daemon_b)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = await registry.put(f"/providers/{pid_a}/status", json=status, headers=daemon_b)
    assert r.status_code == 403
    assert (await registry.delete(f"/providers/{pid_a}", headers=daemon_b)).status_code == 403
    # another provider account's login token, and a requester: refused
    stranger = _bearer(mint_token("provider", str(uuid.uuid4())))
    assert (
        await registry.put(f"/providers/{pid_a}/status", json=status, headers=stranger)
    ).status_code == 403
    requester = _bearer(mint_token("requester", owner))
    assert (await registry.delete(f"/providers/{pid_a}", headers=requester)).status_code == 403
    assert (await registry.post("/providers", json=body, headers=requester)).status_code == 403
    # the owner's own login token manages both hosts; an admin manages any
    owner_login = _bearer(mint_token("provider", owner))
    assert (
        await registry.put(f"/providers/{pid_b}/status", json=status, headers=owner_login)
    ).status_code == 200
    admin = _bearer(mint_token("admin"))
    assert (await registry.delete(f"/providers/{pid_b}", headers=admin)).status_code == 204
    # without a token at all: 401
    assert (await registry.get("/api/v1/providers")).status_code == 401
    r = await registry.get(f"/api/v1/providers/{pid_a}", headers=requester)
    assert r.status_code == 200 and r.json()["status"] == "maintenance"
