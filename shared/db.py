"""Engines, the unit of work, UTC timestamps, and alembic run from a service's own folder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import Depends, Request
from sqlalchemy import event
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from starlette.applications import Starlette

from shared.app import service_state
from shared.errors import ServiceUnavailable

if TYPE_CHECKING:
    from alembic.autogenerate.api import AutogenContext

AfterCommit = Callable[[], Awaitable[None]]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC on both dialects (SQLite hands back naive datetimes)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base; each service declares its own subclass so metadata stays separate."""

    __abstract__ = True


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine tuned per dialect.

    SQLite gets WAL and a busy timeout so the service's readers and its one writer do not
    trip over each other; PostgreSQL gets a pre-ping so a restarted server costs no request.
    """
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    return create_async_engine(url, **kwargs)


def ensure_sqlite_dir(url: str) -> None:
    """Create the folder of a file-backed SQLite URL, so a fresh data dir just works."""
    if is_sqlite(url) and ":///" in url and ":memory:" not in url:
        path = Path(url.split(":///", 1)[1])
        path.parent.mkdir(parents=True, exist_ok=True)


class UnitOfWork:
    """One session that commits once; work to do after the commit (publishing) rides along.

    Callbacks registered with :meth:`after_commit` run only when the commit succeeded, so a
    message is never published for a change that was rolled back.
    """

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._after: list[AfterCommit] = []

    def after_commit(self, fn: AfterCommit) -> None:
        self._after.append(fn)

    async def commit(self) -> None:
        await self.session.commit()
        callbacks, self._after = self._after, []
        for fn in callbacks:
            await fn()

    async def rollback(self) -> None:
        self._after.clear()
        await self.session.rollback()


@asynccontextmanager
async def unit_of_work(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[UnitOfWork]:
    """Commit on success (then run the after-commit work), roll back on error."""
    async with sessions() as session:
        uow = UnitOfWork(session)
        try:
            yield uow
        except BaseException:
            await uow.rollback()
            raise
        await uow.commit()


# --- migrations -------------------------------------------------------------------------------

MIGRATION_LOCK_KEY = 0x64616E7465
"""pg_advisory_lock key ("dante") held while a service migrates, so replicas take turns."""


def run_migrations_sync(script_location: Path, url: str, version_table: str) -> None:
    from alembic import command
    from alembic.config import Config

    ensure_sqlite_dir(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.attributes["url"] = url
    cfg.attributes["version_table"] = version_table
    command.upgrade(cfg, "head")


async def run_migrations(script_location: Path, url: str, version_table: str) -> None:
    """Upgrade to head. Alembic's env runs its own event loop, so it gets a thread."""
    await asyncio.to_thread(run_migrations_sync, script_location, url, version_table)


def run_alembic_env(target_metadata: sa.MetaData) -> None:
    """The body of every service's ``migrations/env.py`` (online mode, async engine)."""
    from alembic import context
    from sqlalchemy.pool import NullPool

    cfg = context.config
    url: str = cfg.attributes["url"]
    version_table: str = cfg.attributes["version_table"]

    def render_item(kind: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
        # Migrations hold plain column types, so they never import application code.
        if kind == "type" and isinstance(obj, UTCDateTime):
            return "sa.DateTime(timezone=True)"
        return False

    def do_run(connection: sa.Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_item=render_item,
            version_table=version_table,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run() -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        async with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY}
                )
                await conn.commit()
            try:
                await conn.run_sync(do_run)
                await conn.commit()
            finally:
                if conn.dialect.name == "postgresql":
                    await conn.execute(
                        sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY}
                    )
                    await conn.commit()
        await engine.dispose()

    asyncio.run(run())


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))


async def _request_uow(request: Request) -> AsyncIterator[UnitOfWork]:
    sessions = service_state(request.app).sessions
    if sessions is None:
        raise ServiceUnavailable("the database is not open yet")
    async with unit_of_work(sessions) as uow:
        yield uow


# scope="function": the commit happens before the response leaves, so a client that reads
# right after a 2xx sees its own write.
UoW = Annotated[UnitOfWork, Depends(_request_uow, scope="function")]


@asynccontextmanager
async def service_database(
    app: Starlette, url: str, migrations: Path, version_table: str
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A service's own database for its lifetime: migrated, in its state, ready-checked."""
    await run_migrations(migrations, url, version_table)
    engine = make_engine(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    state = service_state(app)
    state.sessions = sessions
    state.ready_checks["database"] = lambda: ping(engine)
    try:
        yield sessions
    finally:
        await engine.dispose()
