from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing_service.consumer import BillingWorkers
from billing_service.payments import StripeCheckout
from billing_service.routes import internal, router
from billing_service.settings import BillingSettings
from billing_service.state import State
from billing_service.storage_metering import StorageSampler
from shared.app import Runtime, create_service_app, service_runtime, service_state, set_own_state
from shared.db import service_database
from shared.nats import nats_runtime

MIGRATIONS = Path(__file__).parent / "migrations"


def _sampler(
    settings: BillingSettings, runtime: Runtime, sessions: async_sessionmaker[AsyncSession]
) -> Callable[[], Any] | None:
    """Storage sampling needs billing's service credentials; without them it is off."""
    if not settings.service_client_secret:
        return None
    tokens = runtime.service_tokens(settings.service_client_id, settings.service_client_secret)
    return StorageSampler(
        sessions, settings, runtime.http, runtime.base_url("storage"), tokens.headers
    ).sample


def create_app(
    settings: BillingSettings | None = None,
    *,
    jwks: Callable[[], Any] | None = None,
    stripe_checkout: StripeCheckout | None = None,
) -> FastAPI:
    """``jwks`` replaces the auth key set (tests); ``stripe_checkout`` the Stripe client."""
    settings = settings or BillingSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            service_database(
                app, settings.database_url, MIGRATIONS, "alembic_version_billing"
            ) as sessions,
            nats_runtime(app, settings.nats_url, "billing", ["USAGE"]) as nats,
            service_runtime(app, settings, jwks=jwks) as runtime,
        ):
            set_own_state(app, State(settings, stripe_checkout or StripeCheckout(settings)))
            workers = BillingWorkers(
                sessions,
                nats.js,
                settings,
                _sampler(settings, runtime, sessions),
                ready=service_state(app).ready_checks,
            )
            stop = asyncio.Event()
            task = asyncio.create_task(workers.run(stop))
            try:
                yield
            finally:
                stop.set()
                await asyncio.wait({task}, timeout=10)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    app = create_service_app(settings, title="Dante billing", lifespan=lifespan)
    app.include_router(router, prefix="/api/v1/billing")
    app.include_router(internal, prefix="/internal")
    return app
