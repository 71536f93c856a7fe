from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from provider_registry import metrics
from provider_registry.beat_intake import BeatIntake
from provider_registry.beats import Announcer
from provider_registry.outbox import outbox_loop
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


class SweepGrace:
    """No provider is swept until the registry has reached its database for one TTL without
    a break: after a start, and after an outage of the database (heartbeats could not be
    stored meanwhile, so every provider would look stale the moment it is back)."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl_seconds
        self.clock = clock
        self.since: float | None = None  # when the database was reached again; None: not yet

    def may_sweep(self) -> bool:
        return self.since is not None and self.clock() - self.since >= self.ttl

    def reached(self) -> None:
        if self.since is None:
            self.since = self.clock()
            log.info("sweep.grace", seconds=self.ttl)

    def lost(self) -> None:
        self.since = None


async def sweep_forever(
    sessions: async_sessionmaker[AsyncSession],
    settings: RegistrySettings,
    stop: asyncio.Event,
    ready: ReadyChecks | None = None,
    wake: asyncio.Event | None = None,
    grace: SweepGrace | None = None,
) -> None:
    """Every few seconds (jittered), mark providers with a stale heartbeat offline, once the
    database has been reachable for one TTL (:class:`SweepGrace`)."""
    grace = grace or SweepGrace(settings.heartbeat_ttl_seconds)
    next_refresh = 0.0  # monotonic time the fleet gauges are next re-read

    async def sweep() -> None:
        nonlocal next_refresh
        try:
            async with unit_of_work(sessions) as uow:
                if grace.may_sweep():
                    await RegistryService(uow, wake).sweep(settings.heartbeat_ttl_seconds)
                if time.monotonic() >= next_refresh:
                    await metrics.refresh(uow.session)
                    next_refresh = time.monotonic() + settings.metrics_refresh_seconds
                else:  # the grace counts from a database that answered: ask it every time
                    await uow.session.execute(sa.select(1))
        except Exception:
            grace.lost()
            raise
        grace.reached()

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
            state = State(nats.js, announcer=Announcer(settings.heartbeat_event_every_seconds))
            set_own_state(app, state)
            stop = asyncio.Event()
            ready = service_state(app).ready_checks
            loops = [
                asyncio.create_task(
                    sweep_forever(sessions, settings, stop, ready, state.outbox_wake)
                ),
                asyncio.create_task(
                    outbox_loop(sessions, nats.nc, stop, state.outbox_wake, ready=ready)
                ),
                asyncio.create_task(
                    BeatIntake(nats.nc, sessions, state.announcer, state.outbox_wake).run(
                        stop, ready
                    )
                ),
            ]
            try:
                async with service_runtime(app, settings, jwks=jwks):
                    yield
            finally:
                stop.set()
                await asyncio.gather(*loops)

    app = create_service_app(settings, title="Dante provider registry", lifespan=lifespan)
    # The original clients call /providers directly; through the gateway it is /api/v1/providers.
    app.include_router(router, prefix="/api/v1/providers")
    app.include_router(router, prefix="/providers", include_in_schema=False)
    return app
