"""Forwarding to services found through discovery, round-robin over healthy instances."""

from __future__ import annotations

import itertools

import httpx
import structlog
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from shared.discovery import Discovery
from shared.errors import GatewayTimeout, ServiceUnavailable

log = structlog.get_logger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
# Identity is what the verified token says; a client must not be able to claim one by header.
IDENTITY_HEADERS = frozenset(
    {"x-user-id", "x-user-role", "x-provider-id", "x-forwarded-user", "x-auth-user", "x-role"}
)


class Upstreams:
    """Round-robin over the instances discovery reports; a dead one is skipped for idempotent
    requests (a body already streamed cannot be replayed)."""

    def __init__(self, discovery: Discovery, client: httpx.AsyncClient) -> None:
        self.discovery = discovery
        self.client = client
        self._counters: dict[str, itertools.count[int]] = {}

    async def candidates(self, service: str) -> list[str]:
        bases = await self.discovery.resolve(service)
        n = next(self._counters.setdefault(service, itertools.count()))
        k = n % len(bases)
        return bases[k:] + bases[:k]

    async def forward(
        self, request: Request, service: str, correlation_id: str
    ) -> StreamingResponse:
        headers = [
            (k, v)
            for k, v in request.headers.items()
            if k not in HOP_BY_HOP and k not in IDENTITY_HEADERS and k != "x-request-id"
        ]
        headers.append(("x-request-id", correlation_id))
        if request.client:
            headers.append(("x-forwarded-for", request.client.host))
        has_body = request.method in ("POST", "PUT", "PATCH") or "content-length" in request.headers
        bases = await self.candidates(service)
        for attempt, base in enumerate(bases):
            url = httpx.URL(base + request.url.path, query=request.url.query.encode())
            upstream = self.client.build_request(
                request.method,
                url,
                headers=headers,
                content=request.stream() if has_body else None,
            )
            try:
                resp = await self.client.send(upstream, stream=True)
            except httpx.TimeoutException as exc:
                raise GatewayTimeout(f"{service} did not answer in time") from exc
            except httpx.TransportError as exc:
                log.warning("upstream.unreachable", service=service, url=base, error=str(exc))
                if has_body or attempt == len(bases) - 1:
                    raise ServiceUnavailable(f"{service} is unavailable") from exc
                continue
            out_headers = {k: v for k, v in resp.headers.items() if k not in HOP_BY_HOP}
            out_headers.pop("x-request-id", None)
            return StreamingResponse(
                resp.aiter_raw(),
                status_code=resp.status_code,
                headers=out_headers,
                background=BackgroundTask(resp.aclose),
            )
        raise ServiceUnavailable(f"{service} is unavailable")
