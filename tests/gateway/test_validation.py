"""Bad input at the gateway gets a clear 4xx JSON error, and nothing reaches JetStream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import nats
import pytest

from api_gateway.main import create_app
from api_gateway.settings import GatewaySettings
from tests.support.asgi import served

GOOD = {"type": "script", "name": "hello", "params": {"script_content": "echo hi"}}


@pytest.fixture
async def gateway(nats_url: str, local_jwks: Callable[[], Any]) -> AsyncIterator[httpx.AsyncClient]:
    settings = GatewaySettings(nats_url=nats_url, port=1, max_body_bytes=64 * 1024)
    app = create_app(settings, jwks=local_jwks)
    async with served(app, "http://gw") as client:
        yield client


async def _jobs_in_stream(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info("JOBS")
        return info.state.messages
    finally:
        await nc.close()


def _bearer(mint_token: Callable[..., str], role: str = "requester") -> dict[str, str]:
    return {"authorization": f"Bearer {mint_token(role)}"}


BAD_BODIES = [
    pytest.param(b'{"type": "script", "name": ', 422, id="malformed-json"),
    pytest.param(b'{"name": "x", "params": {"script_content": "x"}}', 422, id="missing-type"),
    pytest.param(b'{"type": "script", "name": "x"}', 422, id="missing-params"),
    pytest.param(
        b'{"type": "script", "name": "x", "params": {"script_content": "x"}, "bogus": 1}',
        422,
        id="unknown-field",
    ),
    pytest.param(b'{"type": "quantum", "name": "x", "params": {}}', 422, id="unknown-type"),
    pytest.param(
        b'{"type": "script", "name": "x", "params": {}}', 422, id="script-without-content"
    ),
    pytest.param(
        b'{"type": "container", "name": "x", "params": {"script_content": "x"}}',
        422,
        id="params-of-other-type",
    ),
    pytest.param(
        b'{"type": "script", "name": "x", "params": {"script_content": "x"}, "priority": 11}',
        422,
        id="priority-out-of-range",
    ),
    pytest.param(b"[]", 422, id="not-an-object"),
]


@pytest.mark.parametrize(("body", "status"), BAD_BODIES)
async def test_bad_bodies_are_refused_and_nothing_is_published(
    gateway: httpx.AsyncClient,
    mint_token: Callable[..., str],
    nats_url: str,
    body: bytes,
    status: int,
) -> None:
    before = await _jobs_in_stream(nats_url)
    headers = {**_bearer(mint_token), "content-type": "application/json"}
    r = await gateway.post("/api/v1/jobs", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"] == "validation_error"
    assert r.json()["detail"]
    assert await _jobs_in_stream(nats_url) == before


async def test_body_over_the_limit_is_413(
    gateway: httpx.AsyncClient, mint_token: Callable[..., str], nats_url: str
) -> None:
    before = await _jobs_in_stream(nats_url)
    huge = {**GOOD, "description": "x" * 100_000}
    r = await gateway.post("/api/v1/jobs", json=huge, headers=_bearer(mint_token))
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted while streaming
        for _ in range(100):
            yield b" " * 1024

    r = await gateway.post("/api/v1/jobs", content=chunks(), headers=_bearer(mint_token))
    assert r.status_code == 413
    assert await _jobs_in_stream(nats_url) == before


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"authorization": "Bearer not.a.token"}, id="garbage"),
        pytest.param({"authorization": "Basic dXNlcjpwYXNz"}, id="wrong-scheme"),
        pytest.param({"x-user-id": "someone", "x-user-role": "admin"}, id="forged-headers"),
    ],
)
async def test_no_or_bad_token_is_401(
    gateway: httpx.AsyncClient, nats_url: str, headers: dict[str, str]
) -> None:
    before = await _jobs_in_stream(nats_url)
    r = await gateway.post("/api/v1/jobs", json=GOOD, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"
    assert await _jobs_in_stream(nats_url) == before


async def test_expired_and_foreign_tokens_are_401(
    gateway: httpx.AsyncClient, mint_token: Callable[..., str], tmp_path: Any
) -> None:
    from auth_service.keys import KeyRing

    expired = mint_token("requester", ttl=-60)
    stranger = KeyRing(tmp_path).sign({"sub": "x", "role": "requester", "typ": "access"})
    for token in (expired, stranger):
        r = await gateway.post(
            "/api/v1/jobs", json=GOOD, headers={"authorization": f"Bearer {token}"}
        )
        assert r.status_code == 401, r.text


async def test_a_provider_token_cannot_submit(
    gateway: httpx.AsyncClient, mint_token: Callable[..., str]
) -> None:
    token = mint_token("provider", provider_id="p-1")
    r = await gateway.post("/api/v1/jobs", json=GOOD, headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden"


async def test_a_good_submission_is_published_once_with_its_id(
    gateway: httpx.AsyncClient, mint_token: Callable[..., str], nats_url: str
) -> None:
    before = await _jobs_in_stream(nats_url)
    body = {**GOOD, "gpu_type": "H100*", "gpu_count": 2, "tags": ["a"]}
    r = await gateway.post(
        "/api/v1/jobs", json=body, headers={**_bearer(mint_token), "x-request-id": "corr-1"}
    )
    assert r.status_code == 202
    job_id = r.json()["job_id"]
    assert await _jobs_in_stream(nats_url) == before + 1
    nc = await nats.connect(nats_url)
    try:
        msg = await nc.jetstream().get_last_msg("JOBS", "jobs.submitted")
    finally:
        await nc.close()
    assert msg.headers["Nats-Msg-Id"] == job_id
    assert msg.headers["Dante-Correlation-Id"] == "corr-1"
    import json

    sent = json.loads(msg.data)
    assert sent["spec"]["resources"] == {"gpu_count": 2, "gpu_model": "H100*", "min_vram_mb": 0}
    assert sent["spec"]["params"]["script_interpreter"] == "bash"


async def test_unknown_route_is_a_json_404(
    gateway: httpx.AsyncClient, mint_token: Callable[..., str]
) -> None:
    r = await gateway.get("/api/v1/nowhere", headers=_bearer(mint_token))
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
