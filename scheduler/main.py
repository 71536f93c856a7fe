from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import async_sessionmaker

from scheduler.routes import router
from scheduler.settings import SchedulerSettings
from scheduler.workers import Workers
from shared.app import create_service_app, service_runtime
from shared.db import make_engine, ping, run_migrations
from shared.nats import close_nats, connect, ensure_streams

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(
    settings: SchedulerSettings | None = None, *, jwks: Callable[[], Any] | None = None
) -> FastAPI:
    settings = settings or SchedulerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_migrations(MIGRATIONS, settings.database_url, "alembic_version_scheduler")
        engine = make_engine(settings.database_url)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        nc = await connect(settings.nats_url, "scheduler")
        js = nc.jetstream()
        await ensure_streams(js)
        app.state.sessions = sessions
        app.state.js = js
        app.state.ready_checks["database"] = lambda: ping(engine)
        app.state.ready_checks["nats"] = lambda: nc.flush(timeout=2)
        workers = Workers(sessions, js, settings)
        app.state.workers = workers
        stop = asyncio.Event()
        # Two-step shutdown: stop taking work (the loops see `stop`), then drain NATS.
        task = asyncio.create_task(workers.run(stop))
        try:
            async with service_runtime(app, settings, jwks=jwks):
                yield
        finally:
            stop.set()
            await asyncio.wait({task}, timeout=10)
            task.cancel()
            await close_nats(nc)
            await engine.dispose()

    app = create_service_app(settings, title="Dante scheduler", lifespan=lifespan)
    app.include_router(router)
    return app
