"""The registry's liveness sweep against a real database (both dialects) and a real nats-server:
a provider whose heartbeats stop goes offline and the registry says so on
``providers.events.offline``; its next heartbeat brings it back online. The registry app runs
in-process with a one-second TTL, so this takes seconds, not a killed daemon."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from provider_registry.service import RegistryService
from shared.app import service_state
from shared.db import unit_of_work, utcnow
from tests.support.asgi import served
from tests.support.registry import Events, provider, registry_app

BODY = {"name": "host", "gpus": [{"index": 0, "name": "H100", "memory_total_mb": 81920}]}


async def test_a_silent_provider_is_swept_offline_and_a_heartbeat_brings_it_back(
    db_url: str, nats_url: str, local_jwks: Callable[[], Any], mint_token: Any, events: Events
) -> None:
    app = registry_app(
        db_url, nats_url, local_jwks, heartbeat_ttl_seconds=1.0, sweep_interval_seconds=0.2
    )
    async with served(app, "http://registry") as client:
        pid, daemon = provider(mint_token)
        r = await client.post("/api/v1/providers", json=BODY, headers=daemon)
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "online"

        # no heartbeat follows: the sweep marks it offline and announces it
        offline = await events.wait(pid, "offline")
        assert offline.status == "offline"
        r = await client.get(f"/api/v1/providers/{pid}", headers=daemon)
        assert r.status_code == 200 and r.json()["status"] == "offline"

        # its next heartbeat brings it back, announced as a status change
        hb = {"gpus": [{"index": 0, "utilization_pct": 5}]}
        r = await client.post(f"/api/v1/providers/{pid}/heartbeat", json=hb, headers=daemon)
        assert r.status_code == 200, r.text
        back = await events.wait(pid, "status")
        assert back.status == "online"


async def test_sweep_marks_only_stale_online_providers_and_publishes_after_commit(
    db_url: str, nats_url: str, local_jwks: Callable[[], Any], mint_token: Any, events: Events
) -> None:
    """``RegistryService.sweep`` itself, with the app's periodic sweep out of the way."""
    app = registry_app(
        db_url, nats_url, local_jwks, heartbeat_ttl_seconds=3600, sweep_interval_seconds=3600
    )
    async with served(app, "http://registry") as client:
        stale, stale_auth = provider(mint_token)
        fresh, fresh_auth = provider(mint_token)
        parked, parked_auth = provider(mint_token)
        for headers in (stale_auth, fresh_auth, parked_auth):
            r = await client.post("/api/v1/providers", json=BODY, headers=headers)
            assert r.status_code == 201, r.text
        r = await client.put(
            f"/api/v1/providers/{parked}/status",
            json={"status": "maintenance"},
            headers=parked_auth,
        )
        assert r.status_code == 200, r.text
        sessions = service_state(app).sessions
        assert sessions is not None
        long_ago = utcnow() - timedelta(minutes=10)
        async with unit_of_work(sessions) as uow:
            await uow.session.execute(
                sa.text("UPDATE providers SET last_heartbeat_at = :at WHERE id IN (:a, :b)"),
                {"at": long_ago, "a": stale, "b": parked},
            )

        async with unit_of_work(sessions) as uow:
            swept = await RegistryService(uow).sweep(ttl_seconds=60)
        assert swept == 1
        offline = await events.wait(stale, "offline")
        assert offline.status == "offline"
        statuses = {
            pid: (await client.get(f"/api/v1/providers/{pid}", headers=auth)).json()["status"]
            for pid, auth in ((stale, stale_auth), (fresh, fresh_auth), (parked, parked_auth))
        }
        assert statuses == {stale: "offline", fresh: "online", parked: "maintenance"}

        # nothing is stale any more: a second sweep finds nobody and announces nothing
        async with unit_of_work(sessions) as uow:
            assert await RegistryService(uow).sweep(ttl_seconds=60) == 0
    assert [e.kind for e in events.seen.get(fresh, [])] == ["registered"]
