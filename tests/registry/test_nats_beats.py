"""Heartbeats over NATS (issue 12) against a real nats-server in operator mode (daemon users
issued as the auth service issues them) and real databases (both dialects): a beat is stored,
answered, and its attempts are announced on EVENTS for the scheduler's reconcile; a daemon's
user cannot beat for another provider; beats keep a provider online across a registry restart
longer than the TTL. The daemon side is the daemon's own ``Registration``."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import sqlalchemy as sa

from auth_service.nats_creds import NatsIssuer
from localdev.cluster import LocalCluster
from provider_daemon.client import GatewayClient
from provider_daemon.heartbeat import Registration
from provider_daemon.inventory import Inventory, Nvml
from provider_daemon.settings import DaemonSettings
from shared.app import service_state
from shared.contracts import (
    HEARTBEAT_NOT_REGISTERED,
    HEARTBEAT_OK,
    heartbeat_subject,
)
from shared.db import unit_of_work
from shared.nats import CREDS_ENV
from tests.support.asgi import served
from tests.support.nats_auth import Connect, daemon_user
from tests.support.registry import Events, registry_app
from tests.support.wait import eventually, eventually_async

BODY = {"name": "host", "gpus": [{"index": 0, "name": "H100", "memory_total_mb": 81920}]}
BEAT = {
    "gpus": [{"index": 0, "utilization_pct": 5.0}],
    "running_tasks": 1,
    "attempts": [{"job_id": "job-1", "attempt": 2}],
}


@pytest.fixture
def service_creds(nats_keys: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry connects as the services' user, as in a permissioned deployment."""
    monkeypatch.setenv(CREDS_ENV, str(nats_keys / "service.creds"))


@pytest.fixture
async def events(services: nats.NATS) -> Events:
    got = Events()
    await services.subscribe("providers.events.*", cb=got.on_msg)
    return got


async def register(client: httpx.AsyncClient, mint_token: Callable[..., str]) -> str:
    pid = str(uuid.uuid4())
    token = mint_token("provider", str(uuid.uuid4()), provider_id=pid)
    r = await client.post(
        "/api/v1/providers", json=BODY, headers={"authorization": f"Bearer {token}"}
    )
    assert r.status_code == 201, r.text
    return pid


@contextlib.asynccontextmanager
async def daemon(
    connect_as: Connect, issuer: NatsIssuer, provider_id: str, errors: list[Exception]
) -> AsyncIterator[Registration]:
    """The daemon's registration and heartbeat code with its own NATS user; its HTTP side
    points nowhere, so a beat NATS cannot carry fails as it would with the gateway down."""
    async with httpx.AsyncClient(timeout=2) as http:
        client = GatewayClient("http://127.0.0.1:9", "unused", http)
        client.provider_id = provider_id
        reg = Registration(DaemonSettings(), client, Inventory(cpu_count=1, memory_mb=1024))
        reg.nats = await connect_as(daemon_user(issuer, provider_id), errors)
        yield reg


async def last_beat(app: Any, provider_id: str) -> tuple[str, datetime | None]:
    sessions = service_state(app).sessions
    assert sessions is not None
    async with unit_of_work(sessions) as uow:
        q = sa.text("SELECT status, last_heartbeat_at FROM providers WHERE id = :id")
        status, at = (await uow.session.execute(q, {"id": provider_id})).one()
    return status, at


async def test_a_beat_over_nats_is_stored_answered_and_its_attempts_announced(
    db_url: str,
    secure_nats: str,
    service_creds: None,
    connect_as: Connect,
    issuer: NatsIssuer,
    events: Events,
    local_jwks: Callable[[], Any],
    mint_token: Any,
) -> None:
    app = registry_app(db_url, secure_nats, local_jwks, heartbeat_ttl_seconds=3600)
    async with served(app, "http://registry") as client:
        pid = await register(client, mint_token)
        before = await last_beat(app, pid)
        async with daemon(connect_as, issuer, pid, []) as reg:
            assert await reg.beat_over_nats(BEAT) == HEARTBEAT_OK
        status, at = await last_beat(app, pid)
        assert status == "online" and at is not None and before[1] is not None
        assert at > before[1]

        # the beat's attempts reach EVENTS, which the scheduler reconciles against
        heard = await eventually_async(lambda: events.of(pid, "heartbeat"), what="its event")
        beat = heard[0]
        assert [(a.job_id, a.attempt) for a in beat.attempts or []] == [("job-1", 2)]
        assert [g.index for g in beat.gpus] == [0]
        # the next beats are within the announce interval: their lists go in their batch's
        # AttemptsHeld (issue 12), one listing per beat
        async with daemon(connect_as, issuer, pid, []) as reg:
            for _ in range(2):
                assert await reg.beat_over_nats(BEAT) == HEARTBEAT_OK
        held = await eventually_async(lambda: events.held(pid)[1:], what="the second listing")
        assert [h.attempts for h in events.held(pid)] == [[("job-1", 2)]] * 2
        assert held[0].at > beat.at and len(events.of(pid, "heartbeat")) == 1

        # a provider the registry does not know is told to register again
        stranger = str(uuid.uuid4())
        async with daemon(connect_as, issuer, stranger, []) as reg:
            assert await reg.beat_over_nats(BEAT) == HEARTBEAT_NOT_REGISTERED


async def test_a_daemon_cannot_beat_for_another_provider(
    db_url: str,
    secure_nats: str,
    service_creds: None,
    connect_as: Connect,
    issuer: NatsIssuer,
    local_jwks: Callable[[], Any],
    mint_token: Any,
) -> None:
    app = registry_app(db_url, secure_nats, local_jwks, heartbeat_ttl_seconds=3600)
    async with served(app, "http://registry") as client:
        mine = await register(client, mint_token)
        theirs = await register(client, mint_token)
        victim_before = await last_beat(app, theirs)
        errors: list[Exception] = []
        async with daemon(connect_as, issuer, mine, errors) as reg:
            assert reg.nats is not None
            with pytest.raises((nats.errors.Error, TimeoutError)):
                await reg.nats.request(heartbeat_subject(theirs), b"{}", timeout=1)
            # its own subject still works on the same connection: the refusal was the server's
            assert await reg.beat_over_nats(BEAT) == HEARTBEAT_OK
        text = " ".join(str(e) for e in errors).lower()
        assert "permissions violation" in text and heartbeat_subject(theirs) in text
        assert await last_beat(app, theirs) == victim_before


async def test_beats_keep_a_provider_online_across_a_registry_restart(
    db_url: str,
    secure_nats: str,
    service_creds: None,
    connect_as: Connect,
    issuer: NatsIssuer,
    events: Events,
    local_jwks: Callable[[], Any],
    mint_token: Any,
) -> None:
    """Down for two TTLs: the daemon's beats fail meanwhile (no registry answers), and the
    next registry's sweep grace of one TTL lets its next beats in before any sweep; they then
    hold the provider online while the sweep runs (a beat every tenth of the TTL)."""
    fields = {"heartbeat_ttl_seconds": 2.0, "sweep_interval_seconds": 0.2}
    first = registry_app(db_url, secure_nats, local_jwks, **fields)
    async with served(first, "http://registry") as client:
        pid = await register(client, mint_token)
    async with daemon(connect_as, issuer, pid, []) as reg:
        answers = [await reg.beat_over_nats(BEAT) for _ in range(3)]
        assert answers == [None] * 3  # nobody listens: the daemon would try HTTP, then back off
        await asyncio.sleep(4.0)

        again = registry_app(db_url, secure_nats, local_jwks, **fields)
        async with served(again, "http://registry"):
            _, down_since = await last_beat(again, pid)
            for _ in range(20):  # two TTLs' worth: past the grace, against the sweep
                assert await reg.beat_over_nats(BEAT) == HEARTBEAT_OK
                await asyncio.sleep(0.2)
            status, at = await last_beat(again, pid)
    assert status == "online"
    assert at is not None and down_since is not None and at > down_since
    assert events.of(pid, "offline") == []


@pytest.mark.e2e
def test_a_real_daemon_beats_over_nats_with_the_user_it_was_issued(
    default_cluster: LocalCluster,
) -> None:
    """The whole chain as processes: the auth service issues the daemon a NATS user that may
    publish on its own heartbeat subject, the daemon beats there, the registry stores it."""
    metrics = f"http://127.0.0.1:{default_cluster.ports['registry']}/metrics"

    def stored_over_nats() -> float:
        for line in httpx.get(metrics).text.splitlines():
            if line.startswith('dante_registry_nats_heartbeats_total{outcome="stored"}'):
                return float(line.split()[-1])
        return 0.0

    eventually(lambda: stored_over_nats() >= 2, interval=0.2, what="beats stored over NATS")


async def test_a_daemon_beats_over_http_when_nats_cannot_carry_it(
    db_url: str,
    secure_nats: str,
    service_creds: None,
    connect_as: Connect,
    issuer: NatsIssuer,
    local_jwks: Callable[[], Any],
    mint_token: Any,
) -> None:
    """The daemon's own heartbeat loop with its NATS connection gone: each beat goes to the
    registry's HTTP endpoint instead (here served in-process in place of the gateway)."""
    app = registry_app(db_url, secure_nats, local_jwks, heartbeat_ttl_seconds=3600)
    async with served(app, "http://registry") as client:
        pid = await register(client, mint_token)
        _, before = await last_beat(app, pid)
        async with daemon(connect_as, issuer, pid, []) as reg:
            assert reg.nats is not None
            await reg.nats.close()  # NATS down for this daemon
            reg.client.http = client
            reg.client.base = "http://registry"
            # the token the gateway's exchange would hand out (no gateway here)
            reg.client._token = mint_token("provider", str(uuid.uuid4()), provider_id=pid)
            reg.client._expires = float("inf")
            reg.settings = DaemonSettings(heartbeat_interval_seconds=0.1)
            stop = asyncio.Event()
            loop = asyncio.create_task(reg.heartbeats(Nvml(), lambda: 0, stop))

            async def newer() -> datetime | None:
                _, at = await last_beat(app, pid)
                assert before is not None
                return at if at is not None and at > before else None

            await eventually_async(newer, what="a beat stored over HTTP")
            stop.set()
            await loop
