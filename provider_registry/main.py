from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from provider_registry import metrics
from provider_registry.routes import router
from provider_registry.service import RegistryService
from provider_registry.settings import RegistrySettings
from provider_registry.state import State
from shared.app import create_service_app, service_runtime, service_state, set_own_state
from shared.db import service_database, unit_of_work
from shared.loops import ReadyChecks, every
from shared.nats import nats_runtime

MIGRATIONS = Path(__file__).parent / "migrations"
log = structlog.get_logger(__name__)


async def sweep_forever(
    sessions: async_sessionmaker[AsyncSession],
    js: Any,
    settings: RegistrySettings,
    stop: asyncio.Event,
    ready: ReadyChecks | None = None,
) -> None:
    """Every few seconds (jittered), mark providers with a stale heartbeat offline."""

    async def sweep() -> None:
        async with unit_of_work(sessions) as uow:
            await RegistryService(uow, js).sweep(settings.heartbeat_ttl_seconds)
            await metrics.refresh(uow.session)

    await every("sweep", sweep, settings.sweep_interval_seconds, stop=stop, ready=ready)


def create_app(
    settings: RegistrySettings | None = None, *, jwks: Callable[[], Any] | None = None
) -> FastAPI:
    settings = settings or RegistrySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            service_database(
                app, settings.database_url, MIGRATIONS, "alembic_version_registry"
            ) as sessions,
            nats_runtime(app, settings.nats_url, "registry", ["EVENTS"]) as nats,
        ):
            set_own_state(app, State(nats.js))
            stop = asyncio.Event()
            sweeper = asyncio.create_task(
                sweep_forever(sessions, nats.js, settings, stop, service_state(app).ready_checks)
            )
            try:
                async with service_runtime(app, settings, jwks=jwks):
                    yield
            finally:
                stop.set()
                await sweeper

    app = create_service_app(settings, title="Dante provider registry", lifespan=lifespan)
    # The original clients call /providers directly; through the gateway it is /api/v1/providers.
    app.include_router(router, prefix="/api/v1/providers")
    app.include_router(router, prefix="/providers", include_in_schema=False)
    return app
