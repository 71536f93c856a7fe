"""The fast lane (api_gateway/fastlane.py) answers exactly as FastAPI's routes do: the same
status, body, headers and metrics label, for accepted submissions and every refusal alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from api_gateway.fastlane import FastLane
from api_gateway.main import create_app
from api_gateway.settings import GatewaySettings
from tests.support.asgi import served
from tests.support.servers import free_port

GOOD = {"type": "script", "name": "hello", "params": {"script_content": "echo hi"}}
# what differs between two answers to the same request by design
VARYING = {"job_id", "timestamp"}
VARYING_HEADERS = {"x-request-id", "date"}


def _app(nats_url: str, jwks: Callable[[], Any], *, lane: bool) -> FastAPI:
    nowhere = f"http://127.0.0.1:{free_port()}"  # no service listens: proxied calls get 503
    services = {s: [nowhere] for s in ("auth", "registry", "scheduler", "storage", "billing")}
    app = create_app(
        GatewaySettings(nats_url=nats_url, port=1, static_services=services), jwks=jwks
    )
    if not lane:
        fast_lane: Any = FastLane
        app.user_middleware = [m for m in app.user_middleware if m.cls is not fast_lane]
    return app


@asynccontextmanager
async def _both(
    nats_url: str, jwks: Callable[[], Any]
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with (
        served(_app(nats_url, jwks, lane=True), "http://gw") as fast,
        served(_app(nats_url, jwks, lane=False), "http://gw") as routed,
    ):
        yield fast, routed


def _shape(r: httpx.Response) -> tuple[int, Any, list[tuple[str, str]]]:
    try:
        body: Any = r.json()
    except ValueError:
        body = r.text
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in VARYING}
    headers = sorted(
        (k, v if k not in ("content-length", "dante-job-id") else "") for k, v in r.headers.items()
    )
    return r.status_code, body, [h for h in headers if h[0] not in VARYING_HEADERS]


def _requests(mint_token: Callable[..., str]) -> list[tuple[str, str, dict[str, Any]]]:
    requester = {"authorization": f"Bearer {mint_token('requester')}"}
    provider = {"authorization": f"Bearer {mint_token('provider', provider_id='p1')}"}
    expired = {"authorization": f"Bearer {mint_token('requester', ttl=-60)}"}
    return [
        ("POST", "/api/v1/jobs", {"json": GOOD, "headers": requester}),
        ("POST", "/api/v1/jobs", {"json": {**GOOD, "typo": 1}, "headers": requester}),
        ("POST", "/api/v1/jobs", {"json": {"type": "script"}, "headers": requester}),
        ("POST", "/api/v1/jobs", {"content": b"{not json", "headers": requester}),
        ("POST", "/api/v1/jobs", {"json": GOOD, "headers": provider}),
        ("POST", "/api/v1/jobs", {"json": GOOD, "headers": expired}),
        ("POST", "/api/v1/jobs", {"json": GOOD}),
        (
            "POST",
            "/api/v1/jobs",
            {"json": GOOD, "headers": {**requester, "idempotency-key": "a b"}},
        ),
        ("POST", "/api/v1/jobs", {"content": b"type=script", "headers": requester}),
        ("GET", "/api/v1/jobs/abc", {"headers": requester}),
        ("GET", "/api/v1/jobs/abc", {}),
        ("GET", "/api/v1/providers?limit=5", {"headers": expired}),
        ("POST", "/api/v1/providers/p1/heartbeat", {"json": {"gpus": []}, "headers": provider}),
        ("GET", "/api/v1/jobs/abc/logs", {"headers": requester}),
        ("DELETE", "/api/v1/jobs/abc/logs", {"headers": requester}),
        ("GET", "/api/v1/nothing-here", {"headers": requester}),
        ("OPTIONS", "/api/v1/jobs", {"headers": requester}),
    ]


async def test_the_fast_lane_answers_as_the_routes_do(
    nats_url: str, local_jwks: Callable[[], Any], mint_token: Callable[..., str]
) -> None:
    async with _both(nats_url, local_jwks) as (fast, routed):
        for method, url, kw in _requests(mint_token):
            a = await fast.request(method, url, **kw)
            b = await routed.request(method, url, **kw)
            assert _shape(a) == _shape(b), (method, url, a.text, b.text)
            assert a.headers["x-request-id"] and a.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("method", "url", "route"),
    [
        ("POST", "/api/v1/jobs", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/abc", "/{path:path}"),
    ],
)
async def test_a_fast_laned_request_keeps_its_route_label(
    nats_url: str,
    local_jwks: Callable[[], Any],
    mint_token: Callable[..., str],
    method: str,
    url: str,
    route: str,
) -> None:
    labels = {"method": method, "route": route}
    before = REGISTRY.get_sample_value("dante_http_request_duration_seconds_count", labels) or 0
    auth = {"authorization": f"Bearer {mint_token('requester')}"}
    async with served(_app(nats_url, local_jwks, lane=True), "http://gw") as gw:
        await gw.request(method, url, json=GOOD if method == "POST" else None, headers=auth)
    after = REGISTRY.get_sample_value("dante_http_request_duration_seconds_count", labels)
    assert after == before + 1
