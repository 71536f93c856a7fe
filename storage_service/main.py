from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI

from shared.app import create_service_app, service_runtime, service_state, set_own_state
from shared.loops import Backoff, retry
from storage_service import metrics
from storage_service.backends import Backend, make_backend
from storage_service.keys import validate_bucket
from storage_service.routes import presigned_router, router
from storage_service.service import StorageService
from storage_service.settings import StorageSettings
from storage_service.state import State

log = structlog.get_logger(__name__)


async def _ensure_default_bucket(backend: Backend, settings: StorageSettings) -> None:
    """Create the default bucket, retrying while the backend comes up (compose starts MinIO
    beside us, not before us)."""

    async def ensure() -> None:
        await backend.ensure_bucket(settings.default_bucket)

    await retry(
        "default_bucket",
        ensure,
        within=settings.startup_wait_seconds,
        backoff=Backoff(base=0.1, cap=5.0, jitter=0.5),
    )


def create_app(
    settings: StorageSettings | None = None,
    *,
    jwks: Callable[[], Any] | None = None,
) -> FastAPI:
    """``jwks`` replaces fetching the key set from the auth service (tests pass their own)."""
    settings = settings or StorageSettings()
    validate_bucket(settings.default_bucket)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = metrics.timed(make_backend(settings))
        try:
            await _ensure_default_bucket(backend, settings)
            set_own_state(app, State(StorageService(backend, settings)))
            service_state(app).ready_checks["backend"] = backend.ping
            log.info("storage.backend_ready", backend=backend.name, bucket=settings.default_bucket)
            async with service_runtime(app, settings, jwks=jwks):
                yield
        finally:
            await backend.close()

    app = create_service_app(settings, title="Dante storage service", lifespan=lifespan)
    app.include_router(router)
    app.include_router(presigned_router)
    return app
