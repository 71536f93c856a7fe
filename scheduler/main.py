from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from scheduler.routes import router
from scheduler.settings import SchedulerSettings
from scheduler.workers import Workers
from shared.app import create_service_app, service_runtime
from shared.db import service_database
from shared.nats import close_nats, connect, ensure_streams

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(
    settings: SchedulerSettings | None = None, *, jwks: Callable[[], Any] | None = None
) -> FastAPI:
    settings = settings or SchedulerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with service_database(
            app, settings.database_url, MIGRATIONS, "alembic_version_scheduler"
        ) as sessions:
            nc = await connect(settings.nats_url, "scheduler")
            js = nc.jetstream()
            await ensure_streams(js)
            app.state.js = js
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
                await asyncio.wait({task}, timeout=settings.shutdown_grace_seconds)
                task.cancel()
                # let the cancelled consumers unsubscribe first, or the drain below waits on
                # their open pull requests until its own timeout
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                await close_nats(nc)

    app = create_service_app(settings, title="Dante scheduler", lifespan=lifespan)
    app.include_router(router)
    return app
