from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import async_sessionmaker

from auth_service.keys import KeyRing
from auth_service.nats_creds import NatsIssuer
from auth_service.routes import internal_router, jwks_router, router
from auth_service.service import AuthService
from auth_service.settings import AuthSettings
from shared.app import create_service_app, service_runtime
from shared.db import UnitOfWork, make_engine, ping, run_migrations

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: AuthSettings | None = None) -> FastAPI:
    settings = settings or AuthSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keys = KeyRing(settings.key_dir)
        app.state.keys = keys
        app.state.nats_issuer = (
            NatsIssuer(settings.nats_dir, settings.nats_user_ttl_seconds)
            if settings.nats_dir
            else None
        )

        async def local_jwks() -> dict:
            return keys.jwks()

        await run_migrations(MIGRATIONS, settings.database_url, "alembic_version_auth")
        engine = make_engine(settings.database_url)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        app.state.sessions = sessions
        app.state.ready_checks["database"] = lambda: ping(engine)
        async with sessions() as session:
            uow = UnitOfWork(session)
            await AuthService(uow, keys, settings).ensure_admin()
            await uow.commit()

        async def local_revocations() -> dict:
            async with sessions() as session:
                feed = await AuthService(UnitOfWork(session), keys, settings).revocation_feed()
                await session.commit()  # the expired rows it pruned
                return feed

        async with service_runtime(app, settings, jwks=local_jwks, revocations=local_revocations):
            yield
        await engine.dispose()

    app = create_service_app(settings, title="Dante auth service", lifespan=lifespan)
    app.include_router(jwks_router)
    app.include_router(internal_router)
    app.include_router(router)
    return app
