"""Fixtures for the scheduler's tests: a nats-server of their own and a real registry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support import servers
from tests.support.asgi import served
from tests.support.wait import eventually_async


@pytest.fixture
def own_nats() -> Iterator[str]:
    """A fresh nats-server per test: durable consumers and streams start empty, so one test's
    leftovers can never be taken by the next test's scheduler."""
    with servers.nats_server() as url:
        yield url


@pytest.fixture
def registry_db(pg_admin_url: str) -> str:
    return servers.asyncpg_url(servers.create_database(pg_admin_url, "registry"))


@pytest.fixture
def sched_db(pg_admin_url: str) -> str:
    return servers.asyncpg_url(servers.create_database(pg_admin_url, "sched"))


@pytest.fixture
async def registry(
    own_nats: str, registry_db: str, local_jwks: Callable[[], Any]
) -> AsyncIterator[httpx.AsyncClient]:
    """The real provider registry (its app, migrations, PostgreSQL and NATS), served in-process;
    tokens are verified against the test keyring."""
    from provider_registry.main import create_app
    from provider_registry.settings import RegistrySettings

    settings = RegistrySettings(
        database_url=registry_db, nats_url=own_nats, heartbeat_ttl_seconds=3600, port=0
    )
    app = create_app(settings, jwks=local_jwks)
    async with served(app, "http://registry") as client:
        yield client


@pytest.fixture
def scheduler_factory(
    own_nats: str, db_url: str, local_jwks: Callable[[], Any]
) -> Callable[..., Any]:
    """The real scheduler app (workers included) in-process, on both dialects, with a client."""
    import contextlib

    from scheduler.main import create_app
    from scheduler.settings import SchedulerSettings

    @contextlib.asynccontextmanager
    async def make(
        presigner: Any = None, billing: Any = None, **overrides: Any
    ) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
        fields = {
            "placement_interval_seconds": 0.1,
            "heartbeat_ttl_seconds": 600.0,
            "shutdown_grace_seconds": 0.5,
            **overrides,
        }
        settings = SchedulerSettings(database_url=db_url, nats_url=own_nats, port=0, **fields)
        app = create_app(settings, jwks=local_jwks, presigner=presigner, billing=billing)
        async with served(app, "http://sched") as client:
            yield app, client

    return make


# --- helpers for the scheduler's tests --------------------------------------------------------

H100 = [
    {"index": 0, "name": "NVIDIA H100 80GB", "memory_total_mb": 81920, "compute_capability": "9.0"}
]
RTX = [
    {"index": i, "name": "RTX 4090", "memory_total_mb": 24564, "compute_capability": "8.9"}
    for i in range(2)
]


def auth(mint_token: Callable[..., str], user: str, role: str = "requester", **kw: Any) -> dict:
    return {"authorization": f"Bearer {mint_token(role, user, **kw)}"}


async def job_in(client: httpx.AsyncClient, headers: dict, job_id: str, *states: str) -> dict:
    async def check() -> dict | None:
        r = await client.get(f"/api/v1/jobs/{job_id}", headers=headers)
        return r.json() if r.status_code == 200 and r.json()["status"] in states else None

    return await eventually_async(check, what=f"job {job_id} in {states}")


async def events(client: httpx.AsyncClient, headers: dict, job_id: str) -> list[dict]:
    r = await client.get(f"/api/v1/jobs/{job_id}/events", headers=headers)
    assert r.status_code == 200
    return r.json()["events"]
