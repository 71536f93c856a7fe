"""The registry's cheap paths (issue 12): the provider search reads a page along its index and
says whether more match (no count unless asked), continued by a cursor; a heartbeat that lists
no attempts and changes nothing is not announced again within its interval, while one that
lists attempts (the scheduler's leases read them) or changes health always is. Real registry,
real nats-server, both dialects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.support.asgi import served
from tests.support.registry import Events, provider, registry_app


def body(model: str) -> dict[str, Any]:
    return {"name": "host", "gpus": [{"index": 0, "name": model, "memory_total_mb": 40960}]}


async def test_search_pages_by_cursor_and_counts_only_when_asked(
    db_url: str, nats_url: str, local_jwks: Callable[[], Any], mint_token: Any
) -> None:
    app = registry_app(db_url, nats_url, local_jwks)
    async with served(app, "http://registry") as client:
        h100: list[str] = []
        daemons: dict[str, dict[str, str]] = {}
        for i in range(5):
            pid, daemon = provider(mint_token)
            daemons[pid] = daemon
            model = "NVIDIA H100 80GB" if i % 2 == 0 else "A100"
            r = await client.post("/api/v1/providers", json=body(model), headers=daemon)
            assert r.status_code == 201, r.text
            if model.endswith("80GB"):
                h100.append(pid)
        anyone = next(iter(daemons.values()))

        seen: list[str] = []
        query: dict[str, Any] = {"gpu_model": "*h100*", "limit": 2}
        pages = 0
        while True:
            r = await client.get("/api/v1/providers", params=query, headers=anyone)
            assert r.status_code == 200, r.text
            page = r.json()
            pages += 1
            assert page["total"] is None  # no count over every match unless asked
            seen += [p["id"] for p in page["providers"]]
            if not page["has_more"]:
                assert page["next_cursor"] is None
                break
            query["cursor"] = page["next_cursor"]
        assert seen == h100 and pages == 2  # registration order, each once

        r = await client.get(
            "/api/v1/providers", params={"gpu_model": "*H100*", "count": "true"}, headers=anyone
        )
        assert r.json()["total"] == 3 and r.json()["has_more"] is False

        put = await client.put(
            f"/api/v1/providers/{h100[0]}/status",
            json={"status": "offline"},
            headers=daemons[h100[0]],
        )
        assert put.status_code == 200, put.text
        params = {"status": "online", "gpu_model": "*H100*", "count": "true", "limit": 1}
        r = await client.get("/api/v1/providers", params=params, headers=anyone)
        page = r.json()
        assert [p["id"] for p in page["providers"]] == [h100[1]]
        assert page["total"] == 2 and page["has_more"] is True

        r = await client.get("/api/v1/providers", params={"cursor": "x"}, headers=anyone)
        assert r.status_code == 400 and r.json()["error"] == "invalid_cursor"


async def test_a_plain_heartbeat_is_announced_once_per_interval_attempts_and_changes_always(
    db_url: str, nats_url: str, local_jwks: Callable[[], Any], mint_token: Any, events: Events
) -> None:
    app = registry_app(db_url, nats_url, local_jwks, heartbeat_event_every_seconds=3600)
    async with served(app, "http://registry") as client:
        pid, daemon = provider(mint_token)
        r = await client.post("/api/v1/providers", json=body("H100"), headers=daemon)
        assert r.status_code == 201, r.text
        beat = f"/api/v1/providers/{pid}/heartbeat"
        plain = {"gpus": [{"index": 0, "utilization_pct": 5}]}
        holding = {**plain, "attempts": [{"job_id": "j1", "attempt": 1}]}
        unhealthy = {"gpus": [{"index": 0, "utilization_pct": 5, "healthy": False}]}
        for hb in (plain, plain, plain, holding, {**plain, "attempts": []}, plain, unhealthy):
            r = await client.post(beat, json=hb, headers=daemon)
            assert r.status_code == 200, r.text
            assert r.json()["last_heartbeat_at"] is not None
        # the last event published follows every earlier one (the outbox sends in order)
        got = await events.until(pid, 5)
        kinds = [(e.kind, None if e.attempts is None else len(e.attempts)) for e in got]
        assert kinds == [
            ("registered", None),
            ("heartbeat", None),  # the first plain beat; the next two are not announced
            ("held", 1),  # a beat that lists attempts always is, in its batch's listings
            ("held", 0),  # ... even an empty list: the scheduler reconciles against it
            ("status", None),  # a health change always is (the plain beat before it is not)
        ]
        assert got[-1].gpus[0].healthy is False
