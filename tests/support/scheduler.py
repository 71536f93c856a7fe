"""Fixtures for the scheduler's tests: a nats-server of their own and a real registry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support import servers


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
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
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
        presigner: Any = None, **overrides: Any
    ) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
        fields = {
            "placement_interval_seconds": 0.1,
            "heartbeat_ttl_seconds": 600.0,
            "shutdown_grace_seconds": 0.5,
            **overrides,
        }
        settings = SchedulerSettings(database_url=db_url, nats_url=own_nats, port=0, **fields)
        app = create_app(settings, jwks=local_jwks, presigner=presigner)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sched") as client:
                yield app, client

    return make
