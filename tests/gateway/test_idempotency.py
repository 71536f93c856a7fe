"""``Idempotency-Key``: a retry names the same job and never makes a second one; a 503 says
truly whether the job can exist, also when nats-server is killed mid-submission (issue 19)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from api_gateway.main import create_app
from api_gateway.settings import GatewaySettings
from api_gateway.submit import job_id_for
from tests.support.asgi import served
from tests.support.servers import RestartableNats, restartable_nats
from tests.support.wait import eventually_async

GOOD = {"type": "script", "name": "hello", "params": {"script_content": "echo hi"}}


async def _job_ids_in_stream(nats_url: str) -> list[str]:
    """The job id of every message in JOBS (nobody consumes it here), duplicates included."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info("JOBS")).state
        ids = []
        for seq in range(state.first_seq, state.last_seq + 1):
            try:
                msg = await js.get_msg("JOBS", seq)
            except nats.js.errors.NotFoundError:
                continue
            ids.append(httpx.Response(200, content=msg.data).json()["job_id"])
        return ids
    finally:
        await nc.close()


@pytest.fixture
def killable_nats(tmp_path: Path) -> Iterator[RestartableNats]:
    """A nats-server of this test's own: killed here, and its JOBS stream read whole."""
    with restartable_nats(tmp_path / "nats") as server:
        yield server


@pytest.fixture
async def gateway(
    killable_nats: RestartableNats, local_jwks: Callable[[], Any]
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(GatewaySettings(nats_url=killable_nats.url, port=1), jwks=local_jwks)
    async with served(app, "http://gw") as client:
        yield client


async def test_the_same_key_answers_the_same_job_and_publishes_it_once(
    gateway: httpx.AsyncClient, mint_token: Callable[..., str], killable_nats: RestartableNats
) -> None:
    user = str(uuid.uuid4())
    auth = {"authorization": f"Bearer {mint_token('requester', user)}"}
    key = str(uuid.uuid4())
    first = await gateway.post("/api/v1/jobs", json=GOOD, headers={**auth, "Idempotency-Key": key})
    again = await gateway.post("/api/v1/jobs", json=GOOD, headers={**auth, "Idempotency-Key": key})
    assert first.status_code == again.status_code == 202, first.text
    assert first.json()["job_id"] == again.json()["job_id"] == job_id_for(user, key)
    assert (await _job_ids_in_stream(killable_nats.url)).count(first.json()["job_id"]) == 1

    other = {"authorization": f"Bearer {mint_token('requester', str(uuid.uuid4()))}"}
    theirs = await gateway.post(
        "/api/v1/jobs", json=GOOD, headers={**other, "Idempotency-Key": key}
    )
    assert theirs.status_code == 202
    assert theirs.json()["job_id"] != first.json()["job_id"]  # a key is per user

    unkeyed = [(await gateway.post("/api/v1/jobs", json=GOOD, headers=auth)) for _ in range(2)]
    assert unkeyed[0].json()["job_id"] != unkeyed[1].json()["job_id"]

    bad = await gateway.post(
        "/api/v1/jobs", json=GOOD, headers={**auth, "Idempotency-Key": "has space"}
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == "bad_request"


async def test_killing_nats_mid_submission_leaves_no_phantom_and_no_duplicate(
    killable_nats: RestartableNats, local_jwks: Callable[[], Any], mint_token: Callable[..., str]
) -> None:
    user = str(uuid.uuid4())
    auth = {"authorization": f"Bearer {mint_token('requester', user)}"}
    app = create_app(GatewaySettings(nats_url=killable_nats.url, port=1), jwks=local_jwks)
    answers: dict[str, httpx.Response] = {}

    async with served(app, "http://gw") as gw:

        async def submit(key: str) -> httpx.Response:
            r = await gw.post("/api/v1/jobs", json=GOOD, headers={**auth, "Idempotency-Key": key})
            answers[key] = r
            return r

        # a stream of submissions, the server SIGKILLed while they are in flight
        in_flight = [asyncio.create_task(submit(f"k-{i}")) for i in range(200)]
        await asyncio.sleep(0.05)
        killable_nats.kill()
        await asyncio.gather(*in_flight)
        # once the gateway knows it is down: refused at once, nothing kept to be sent later
        # (before it notices, a submission is written and unconfirmed: submission_unknown)
        nc = app.state.own.submissions.nc
        await eventually_async(lambda: not nc.is_connected, what="the disconnect noticed")
        for i in range(200, 208):
            await submit(f"k-{i}")
        killable_nats.start()

        statuses = Counter(
            r.json()["error"] if r.status_code == 503 else r.status_code for r in answers.values()
        )
        assert statuses["service_unavailable"] >= 8, statuses
        assert set(statuses) <= {202, "service_unavailable", "submission_unknown"}, statuses
        unknown = [k for k, r in answers.items() if r.status_code == 503 and "unknown" in r.text]
        for key in unknown:
            assert answers[key].headers["retry-after"]
            assert answers[key].headers["dante-job-id"] == job_id_for(user, key)

        # a client retries every "unknown" with its key once NATS is back: the same job id
        async def retried(key: str) -> bool:
            r = await submit(key)
            return r.status_code == 202 and r.json()["job_id"] == job_id_for(user, key)

        for key in unknown:
            await eventually_async(lambda key=key: retried(key), what=f"a retry of {key}")

    accepted = {r.json()["job_id"] for r in answers.values() if r.status_code == 202}
    refused = {
        job_id_for(user, k)
        for k, r in answers.items()
        if r.status_code == 503 and r.json()["error"] == "service_unavailable"
    }
    # the gateway's connections were drained on the way out (nats-py flushes what it still
    # held): a phantom would be in the stream by now; a moment for the server to store it
    await asyncio.sleep(1)
    in_stream = Counter(await _job_ids_in_stream(killable_nats.url))
    assert not [j for j, n in in_stream.items() if n > 1], "a job was published twice"
    assert not refused & set(in_stream), "a '503 nothing was submitted' became a job"
    assert accepted <= set(in_stream), "an accepted job is missing"
