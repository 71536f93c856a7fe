"""A batch of heartbeats announces the attempts its beats list in one ``AttemptsHeld`` message
(issue 12), through the registry's outbox like every event: each beat's list goes out once,
either there or in the provider's own event (a status or health change, or its once-per-interval
announcement), never both. Real registry app (its database, outbox and NATS), both dialects."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from provider_registry import beats
from provider_registry.beats import Announcer, BeatResult, absorb, held_rows
from provider_registry.schemas import HeartbeatIn
from shared.app import service_state
from shared.contracts import AttemptsHeld
from shared.db import unit_of_work
from tests.support.asgi import served
from tests.support.registry import Events, provider, registry_app

BODY = {"name": "host", "gpus": [{"index": 0, "name": "H100", "memory_total_mb": 81920}]}


def beat(attempts: list[tuple[str, int]] | None, healthy: bool = True) -> HeartbeatIn:
    held = None if attempts is None else [{"job_id": j, "attempt": a} for j, a in attempts]
    gpus = [{"index": 0, "utilization_pct": 5.0, "healthy": healthy}]
    return HeartbeatIn.model_validate({"gpus": gpus, "attempts": held})


async def test_a_batch_announces_its_listings_in_one_message_each_once(
    db_url: str, nats_url: str, local_jwks: Callable[[], Any], mint_token: Any, events: Events
) -> None:
    app = registry_app(db_url, nats_url, local_jwks, heartbeat_event_every_seconds=3600)
    async with served(app, "http://registry") as client:
        pids = []
        for _ in range(5):
            pid, daemon = provider(mint_token)
            r = await client.post("/api/v1/providers", json=BODY, headers=daemon)
            assert r.status_code == 201, r.text
            pids.append(pid)
        listing, empty, plain, sick, due = pids
        announcer = Announcer(every=3600)
        for pid in pids[:4]:  # announced within the interval; ``due`` never was
            announcer.mark(pid)
        batch = [
            (listing, beat([("j1", 1), ("j2", 3)])),
            (empty, beat([])),
            (plain, beat(None)),
            (sick, beat([("j4", 1)], healthy=False)),
            (due, beat([("j5", 2)])),
            ("never-registered", beat([("j6", 1)])),
        ]
        sessions = service_state(app).sessions
        assert sessions is not None
        async with unit_of_work(sessions) as uow:
            done = await absorb(uow.session, batch, announcer)
        assert done.results == [BeatResult.STORED] * 5 + [BeatResult.NOT_REGISTERED]

        status = await events.wait(sick, "status")  # a health change: its own event, its list
        assert [(a.job_id, a.attempt) for a in status.attempts or []] == [("j4", 1)]
        heartbeat = await events.wait(due, "heartbeat")  # due: announced, with its list
        assert [(a.job_id, a.attempt) for a in heartbeat.attempts or []] == [("j5", 2)]
        got = await events.until(listing, 2)
        assert got[-1].kind == "held" and got[-1].attempts == [("j1", 1), ("j2", 3)]
        (held,) = events.held(empty)
        assert held.attempts == [] and held.batch == got[-1].batch == 1  # the same message
        assert held.at == status.at == heartbeat.at  # the batch's one transaction time
        # nothing else: a plain beat within its interval says nothing, no list goes out twice
        assert events.batches == 1
        assert [e.kind for e in events.seen[plain]] == ["registered"]
        assert events.held(sick) == events.held(due) == []
        assert "never-registered" not in events.seen


def test_a_large_batch_is_split_into_messages_of_bounded_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(beats, "HELD_PER_ROW", 5)
    at = datetime(2026, 11, 30, tzinfo=UTC)
    held = {f"p{i}": [(f"j{i}-{k}", 1) for k in range(i)] for i in range(6)}
    rows = held_rows(held, at)
    sizes = [sum(1 + len(a) for a in r["payload"]["held"].values()) for r in rows]
    assert len(rows) == 5 and all(s <= 5 for s in sizes[:-1])
    assert sizes[-1] == 6  # one provider's list is never split, even past the bound
    parsed = [AttemptsHeld.model_validate(r["payload"]) for r in rows]
    merged = {pid: refs for m in parsed for pid, refs in m.held.items()}
    assert merged == held and {m.at for m in parsed} == {at}
    assert {r["subject"] for r in rows} == {"providers.events.held"}
    assert len({r["msg_id"] for r in rows}) == len(rows)
