from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI

from shared.app import create_service_app, service_runtime
from storage_service import metrics
from storage_service.backends import Backend, make_backend
from storage_service.keys import validate_bucket
from storage_service.routes import presigned_router, router
from storage_service.service import StorageService
from storage_service.settings import StorageSettings

log = structlog.get_logger(__name__)


async def _ensure_default_bucket(backend: Backend, settings: StorageSettings) -> None:
    """Create the default bucket, retrying while the backend comes up (compose starts MinIO
    beside us, not before us)."""
    deadline = time.monotonic() + settings.startup_wait_seconds
    delay = 0.2
    while True:
        try:
            await backend.ensure_bucket(settings.default_bucket)
            return
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("storage.backend_waiting", backend=backend.name, error=type(exc).__name__)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 5.0)


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
            app.state.storage = StorageService(backend, settings)
            app.state.ready_checks["backend"] = backend.ping
            log.info("storage.backend_ready", backend=backend.name, bucket=settings.default_bucket)
            async with service_runtime(app, settings, jwks=jwks):
                yield
        finally:
            await backend.close()

    app = create_service_app(settings, title="Dante storage service", lifespan=lifespan)
    app.include_router(router)
    app.include_router(presigned_router)
    return app
