"""The database away is a 503 with ``Retry-After`` (``error: database_unavailable``), never a
500: the shared exception handlers tell "the database is down" from a bug. Shown on the real
scheduler app over a throwaway PostgreSQL this test stops and starts again."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from shared.errors import database_unavailable
from tests.support.asgi import served
from tests.support.pg_control import ControlledPostgres, controlled_postgres
from tests.support.servers import asyncpg_url, create_database
from tests.support.wait import eventually_async


@pytest.fixture
def outage_pg() -> Iterator[tuple[ControlledPostgres, str]]:
    """A PostgreSQL of this test's own (it is stopped), with the scheduler's database."""
    with controlled_postgres() as pg:
        yield pg, asyncpg_url(create_database(pg.url, "sched"))


async def test_a_stopped_database_is_a_503_and_the_service_recovers(
    outage_pg: tuple[ControlledPostgres, str],
    nats_url: str,
    local_jwks: Callable[[], Any],
    mint_token: Callable[..., str],
) -> None:
    from scheduler.main import create_app
    from scheduler.settings import SchedulerSettings

    pg, url = outage_pg
    headers = {"authorization": f"Bearer {mint_token('requester', 'db-outage-user')}"}
    settings = SchedulerSettings(database_url=url, nats_url=nats_url, port=0)
    app = create_app(settings, jwks=local_jwks)
    async with served(app, "http://sched") as client:
        r = await client.get("/api/v1/jobs/nope", headers=headers)
        assert r.status_code == 404  # the database answers
        pg.stop()  # "fast": every connection is cut, as a restart does
        for path in ("/api/v1/jobs/nope", "/api/v1/jobs"):
            r = await client.get(path, headers=headers)
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "database_unavailable"
            assert int(r.headers["retry-after"]) >= 1
        pg.start()

        async def recovered() -> bool:
            r = await client.get("/api/v1/jobs/nope", headers=headers)
            assert r.status_code == 404, r.text
            return True

        await eventually_async(recovered, what="the scheduler answering again")


def _wrapped(orig: BaseException, cls: type[sa_exc.DBAPIError] = sa_exc.OperationalError) -> Any:
    return cls("SELECT 1", {}, orig)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "down"),
    [
        (_wrapped(sqlite3.OperationalError("database is locked")), True),
        (sqlite3.OperationalError("database is locked"), True),
        (_wrapped(sqlite3.OperationalError("no such table: jobs")), False),  # a bug
        (_wrapped(sqlite3.IntegrityError("UNIQUE failed"), sa_exc.IntegrityError), False),
        (ValueError("bad"), False),
        (ConnectionRefusedError(111, "refused"), False),  # not raised in the database layer
    ],
)
def test_what_counts_as_the_database_being_down(exc: BaseException, down: bool) -> None:
    assert database_unavailable(exc) is down
