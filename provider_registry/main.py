from __future__ import annotations

import asyncio
import contextlib
import random
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
from shared.app import create_service_app, service_runtime
from shared.db import service_database, unit_of_work
from shared.nats import close_nats, connect, ensure_streams

MIGRATIONS = Path(__file__).parent / "migrations"
log = structlog.get_logger(__name__)


async def sweep_forever(
    sessions: async_sessionmaker[AsyncSession],
    js: Any,
    settings: RegistrySettings,
    stop: asyncio.Event,
) -> None:
    """Every few seconds (jittered), mark providers with a stale heartbeat offline."""
    while not stop.is_set():
        try:
            async with unit_of_work(sessions) as uow:
                await RegistryService(uow, js).sweep(settings.heartbeat_ttl_seconds)
                await metrics.refresh(uow.session)
        except Exception as exc:
            log.warning("sweep.failed", error=str(exc))
        delay = settings.sweep_interval_seconds * random.uniform(0.8, 1.2)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


def create_app(
    settings: RegistrySettings | None = None, *, jwks: Callable[[], Any] | None = None
) -> FastAPI:
    settings = settings or RegistrySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with service_database(
            app, settings.database_url, MIGRATIONS, "alembic_version_registry"
        ) as sessions:
            nc = await connect(settings.nats_url, "registry")
            js = nc.jetstream()
            await ensure_streams(js, ["EVENTS"])
            app.state.js = js
            app.state.ready_checks["nats"] = lambda: nc.flush(timeout=2)
            stop = asyncio.Event()
            sweeper = asyncio.create_task(sweep_forever(sessions, js, settings, stop))
            try:
                async with service_runtime(app, settings, jwks=jwks):
                    yield
            finally:
                stop.set()
                await sweeper
                await close_nats(nc)

    app = create_service_app(settings, title="Dante provider registry", lifespan=lifespan)
    # The original clients call /providers directly; through the gateway it is /api/v1/providers.
    app.include_router(router, prefix="/api/v1/providers")
    app.include_router(router, prefix="/providers", include_in_schema=False)
    return app
