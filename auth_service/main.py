from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from auth_service.keys import KeyRing
from auth_service.nats_creds import NatsIssuer
from auth_service.routes import internal_router, jwks_router, router
from auth_service.service import AuthService
from auth_service.settings import AuthSettings
from auth_service.state import State
from shared.app import create_service_app, service_runtime, set_own_state
from shared.db import service_database, unit_of_work

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: AuthSettings | None = None) -> FastAPI:
    settings = settings or AuthSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keys = KeyRing(settings.key_dir)
        issuer = (
            NatsIssuer(settings.nats_dir, settings.nats_user_ttl_seconds)
            if settings.nats_dir
            else None
        )
        set_own_state(app, State(keys, issuer, settings))

        async def local_jwks() -> dict[str, Any]:
            return keys.jwks()

        async with service_database(
            app, settings.database_url, MIGRATIONS, "alembic_version_auth"
        ) as sessions:
            async with unit_of_work(sessions) as uow:
                await AuthService(uow, keys, settings).ensure_admin()

            async def local_revocations() -> dict[str, Any]:
                async with unit_of_work(sessions) as uow:
                    # commits: reading the feed prunes the expired rows (see the repository)
                    return await AuthService(uow, keys, settings).revocation_feed()

            async with service_runtime(
                app, settings, jwks=local_jwks, revocations=local_revocations
            ):
                yield

    app = create_service_app(settings, title="Dante auth service", lifespan=lifespan)
    app.include_router(jwks_router)
    app.include_router(internal_router)
    app.include_router(router)
    return app
