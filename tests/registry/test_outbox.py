"""Provider events go out from an outbox: a heartbeat answers while NATS is down, its event
waits in the database and is sent by the next registry process once NATS is back; after a
database outage longer than the TTL, providers get one TTL of grace before any sweep
(issue 19). Real nats-server (killed and restarted), real databases (PostgreSQL stopped)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import sqlalchemy as sa

from shared.app import service_state
from shared.contracts import ProviderEvent
from shared.db import unit_of_work
from tests.support.asgi import served
from tests.support.pg_control import ControlledPostgres, controlled_postgres
from tests.support.registry import provider, registry_app
from tests.support.servers import (
    RestartableNats,
    asyncpg_url,
    create_database,
    restartable_nats,
)
from tests.support.wait import eventually_async

BODY = {"name": "host", "gpus": [{"index": 0, "name": "H100", "memory_total_mb": 81920}]}
HEARTBEAT = {"gpus": [{"index": 0, "utilization_pct": 5}]}


async def events_in_stream(nats_url: str, provider_id: str) -> list[ProviderEvent]:
    """Every provider event JetStream holds for ``provider_id``, in order."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info("EVENTS")).state
        out: list[ProviderEvent] = []
        if not state.messages:
            return out
        for seq in range(state.first_seq, state.last_seq + 1):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                msg = await js.get_msg("EVENTS", seq)
                # a batch's held attempts (``providers.events.held``) are no one provider's
                if msg.subject.startswith("providers.events.") and not msg.subject.endswith(
                    ".held"
                ):
                    event = ProviderEvent.model_validate_json(msg.data)
                    if event.provider_id == provider_id:
                        out.append(event)
        return out
    finally:
        await nc.close()


async def outbox_rows(app: Any) -> int:
    sessions = service_state(app).sessions
    assert sessions is not None
    async with unit_of_work(sessions) as uow:
        q = sa.text("SELECT count(*) FROM provider_event_outbox")
        return int((await uow.session.execute(q)).scalar_one())


@pytest.fixture
def killable_nats(tmp_path: Path) -> Iterator[RestartableNats]:
    with restartable_nats(tmp_path / "nats") as server:
        yield server


async def test_a_heartbeat_answers_without_nats_and_its_event_survives_a_restart(
    db_url: str,
    killable_nats: RestartableNats,
    local_jwks: Callable[[], Any],
    mint_token: Any,
) -> None:
    quiet = {"heartbeat_ttl_seconds": 3600, "sweep_interval_seconds": 3600}
    pid, daemon = provider(mint_token)
    app = registry_app(db_url, killable_nats.url, local_jwks, **quiet)
    async with served(app, "http://registry") as client:
        r = await client.post("/api/v1/providers", json=BODY, headers=daemon)
        assert r.status_code == 201, r.text

        async def registered() -> bool:
            return [e.kind for e in await events_in_stream(killable_nats.url, pid)] == [
                "registered"
            ]

        await eventually_async(registered, what="the registration event")
        # sent rows leave the outbox: deleted after the publish is acked, so a moment after
        # the event is visible in the stream
        await eventually_async(lambda: _empty(app), what="the sent row leaving the outbox")

        killable_nats.kill()
        r = await client.post(f"/api/v1/providers/{pid}/heartbeat", json=HEARTBEAT, headers=daemon)
        assert r.status_code == 200, r.text
        # answered while its event could not be sent: it waits in the database
        assert await outbox_rows(app) == 1
    # the registry is gone with its event unsent; NATS and a new registry process come back
    killable_nats.start()
    again = registry_app(db_url, killable_nats.url, local_jwks, **quiet)
    async with served(again, "http://registry"):

        async def sent() -> list[str]:
            kinds = [e.kind for e in await events_in_stream(killable_nats.url, pid)]
            return kinds if len(kinds) > 1 else []

        assert await eventually_async(sent, what="the heartbeat event") == [
            "registered",
            "heartbeat",
        ]
        await eventually_async(lambda: _empty(again), what="an empty outbox")


async def _empty(app: Any) -> bool:
    return await outbox_rows(app) == 0


async def _passes(check: Callable[[], Any]) -> bool:
    try:
        await check()
    except Exception:
        return False
    return True


@pytest.fixture
def outage_pg() -> Iterator[tuple[ControlledPostgres, str]]:
    """A PostgreSQL of this test's own (stopped by it) and the registry's database URL."""
    with controlled_postgres() as pg:
        yield pg, asyncpg_url(create_database(pg.url, "registry"))


async def test_after_a_database_outage_providers_get_one_ttl_before_a_sweep(
    outage_pg: tuple[ControlledPostgres, str],
    nats_url: str,
    local_jwks: Callable[[], Any],
    mint_token: Any,
) -> None:
    ttl = 2.0
    pg, db = outage_pg
    app = registry_app(
        db,
        nats_url,
        local_jwks,
        heartbeat_ttl_seconds=ttl,
        sweep_interval_seconds=0.1,
    )
    pid, daemon = provider(mint_token)
    async with served(app, "http://registry") as client:
        r = await client.post("/api/v1/providers", json=BODY, headers=daemon)
        assert r.status_code == 201, r.text
        database_up = asyncio.Event()
        database_up.set()
        beating = True
        stored: list[int] = []

        async def beat() -> None:
            """A healthy daemon: a beat per half TTL. While the registry's database is down its
            beats would fail (they are held back here: a failed request costs a logged
            traceback), so the last stored one grows older than the TTL."""
            while beating:
                await database_up.wait()
                r = await client.post(
                    f"/api/v1/providers/{pid}/heartbeat", json=HEARTBEAT, headers=daemon
                )
                stored.append(r.status_code)
                await asyncio.sleep(ttl / 2)

        beats = asyncio.create_task(beat())
        try:
            database_up.clear()
            pg.stop()
            await asyncio.sleep(2 * ttl)  # the outage: longer than the TTL
            pg.start()
            # the sweep sees the database back before the daemon's next beat does (its loop,
            # unhealthy after failing through the outage, is healthy again)
            sweep_ok = service_state(app).ready_checks["loop.sweep"]
            with pytest.raises(Exception, match="sweep"):
                await sweep_ok()
            await eventually_async(lambda: _passes(sweep_ok), what="the sweep working again")
            await asyncio.sleep(0.3)
            before = len(stored)
            database_up.set()

            async def stored_again() -> bool:
                return 200 in stored[before:]

            await eventually_async(stored_again, what="a heartbeat stored after the outage")
            # past the grace (sweeps run every 0.1 s): the provider that kept beating is online
            await asyncio.sleep(2 * ttl)
            r = await client.get(f"/api/v1/providers/{pid}", headers=daemon)
            assert r.json()["status"] == "online", r.text
            assert "offline" not in [e.kind for e in await events_in_stream(nats_url, pid)]
        finally:
            beating = False
            database_up.set()
            await beats

        # and sweeping works again: a provider that stops beating goes offline
        async def offline() -> bool:
            r = await client.get(f"/api/v1/providers/{pid}", headers=daemon)
            return bool(r.json()["status"] == "offline")

        await eventually_async(offline, what="the silent provider swept")
