from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from scheduler.admin_routes import router as policy_router
from scheduler.billing import HttpBilling
from scheduler.dispatch import Presigner
from scheduler.routes import router
from scheduler.settings import SchedulerSettings
from scheduler.state import State
from scheduler.storage_io import HttpPresigner
from scheduler.workers import Workers
from shared.app import Runtime, create_service_app, service_runtime, service_state, set_own_state
from shared.db import service_database
from shared.nats import nats_runtime

MIGRATIONS = Path(__file__).parent / "migrations"


def _presigner(settings: SchedulerSettings, runtime: Runtime) -> HttpPresigner | None:
    """Storage I/O needs the scheduler's service credentials; without them, jobs that declare
    inputs/outputs wait (their events say so) and jobs without I/O run without a log upload."""
    if not settings.service_client_secret:
        return None
    tokens = runtime.service_tokens(settings.service_client_id, settings.service_client_secret)
    return HttpPresigner(
        runtime.base_url("storage"), runtime.http, tokens, settings.presign_expires_seconds
    )


def _billing(settings: SchedulerSettings, runtime: Runtime) -> HttpBilling | None:
    if not settings.billing_holds:
        return None
    tokens = runtime.service_tokens(settings.service_client_id, settings.service_client_secret)
    return HttpBilling(runtime.base_url("billing"), runtime.http, tokens)


def create_app(
    settings: SchedulerSettings | None = None,
    *,
    jwks: Callable[[], Any] | None = None,
    presigner: Presigner | None = None,
    billing: HttpBilling | None = None,
) -> FastAPI:
    """``jwks`` and ``presigner`` replace the auth and storage clients (tests pass their own)."""
    settings = settings or SchedulerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            service_database(
                app, settings.database_url, MIGRATIONS, "alembic_version_scheduler"
            ) as sessions,
            nats_runtime(app, settings.nats_url, "scheduler") as nats,  # drained last
            service_runtime(app, settings, jwks=jwks) as runtime,
        ):
            set_own_state(app, State(nats.js, settings))
            workers = Workers(
                sessions,
                nats.js,
                settings,
                presigner or _presigner(settings, runtime),
                service_state(app).ready_checks,
                billing=billing or _billing(settings, runtime),
                nc=nats.nc,
            )
            # Two-step shutdown: stop taking work (the loops see `stop`), then drain NATS.
            stop = asyncio.Event()
            task = asyncio.create_task(workers.run(stop))
            try:
                yield
            finally:
                stop.set()
                await asyncio.wait({task}, timeout=settings.shutdown_grace_seconds)
                task.cancel()
                # let the cancelled consumers unsubscribe first, or the drain below waits
                # on their open pull requests until its own timeout
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    app = create_service_app(settings, title="Dante scheduler", lifespan=lifespan)
    app.include_router(router)
    app.include_router(policy_router)  # issue 17
    return app
