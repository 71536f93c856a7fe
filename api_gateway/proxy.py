"""Forwarding to services found through discovery, round-robin over healthy instances.

The upstream client is aiohttp's, not httpx's: measured as this gateway's proxy on the 2-core
VM (docs/storage.md), httpx spent 3.2-4.6 CPU-s per GiB streamed down and 1.8-2.4 up,
aiohttp 0.8-1.2 both ways, and the gateway is on the path of every object byte. Bodies stream both
ways; the response body is handed on as it arrives, in reads of at most ``READ_BUFFER``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import aiohttp
import structlog
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from yarl import URL

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
# Our own request id replaces the upstream's (the RequestContext middleware adds it).
# The gateway's own server adds ``date`` and ``server``: the upstream's would be a second copy.
_NOT_RETURNED = frozenset(h.encode() for h in (*HOP_BY_HOP, "x-request-id", "date", "server"))
# aiohttp's read buffer per connection (it pauses reading at twice this). 1 MiB measured no
# steady gain over 256 KiB (1.0-1.2 CPU-s per GiB either way) and holds 4x more per open
# download; 64 KiB roughly halved download MiB/s.
READ_BUFFER = 256 * 1024
# Answers up to this size (by Content-Length) are read whole and sent in one piece.
SMALL_BODY = 64 * 1024


class Upstreams:
    """Round-robin over the instances discovery reports; a dead one is skipped for idempotent
    requests (a body already streamed cannot be replayed)."""

    def __init__(self, discovery: Discovery, timeout_seconds: float) -> None:
        self.discovery = discovery
        self.timeout = timeout_seconds
        self._counters: dict[str, itertools.count[int]] = {}
        self.session = aiohttp.ClientSession(
            # idle connections closed well before the services' 30 s keep-alive (shared/app.py)
            connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=10),
            auto_decompress=False,  # bytes pass through as the service sent them
            read_bufsize=READ_BUFFER,
            # Only what the client sent goes upstream; aiohttp would add its own defaults.
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )

    async def aclose(self) -> None:
        await self.session.close()

    async def candidates(self, service: str) -> list[str]:
        bases = await self.discovery.resolve(service)
        n = next(self._counters.setdefault(service, itertools.count()))
        k = n % len(bases)
        return bases[k:] + bases[:k]

    async def forward(self, request: Request, service: str, correlation_id: str) -> Response:
        headers = [
            (k, v)
            for k, v in request.headers.items()
            if k not in HOP_BY_HOP and k not in IDENTITY_HEADERS and k != "x-request-id"
        ]
        headers.append(("x-request-id", correlation_id))
        if request.client:
            headers.append(("x-forwarded-for", request.client.host))
        has_body = request.method in ("POST", "PUT", "PATCH") or "content-length" in request.headers
        # The raw path and query, so percent-escapes reach the service exactly as sent.
        target = (request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
        if query := request.scope.get("query_string"):
            target += "?" + query.decode("latin-1")
        bases = await self.candidates(service)
        # A service that closed the connection before answering (a pooled keep-alive one it
        # had just dropped) gets an idempotent request without a body once more on a fresh
        # connection: aiohttp (>= 3.10, RFC 9112 section 9.3.1) does that itself, and never
        # for a body already streamed (tests/gateway/test_crash.py holds it to that).
        for attempt, base in enumerate(bases):
            try:
                if has_body and _small_body(request):
                    resp = await self._send_small_body(request, base + target, headers)
                elif has_body:
                    resp = await self._send_with_body(request, base + target, headers)
                else:
                    resp = await self.session.request(
                        request.method,
                        URL(base + target, encoded=True),
                        headers=headers,
                        allow_redirects=False,
                        timeout=aiohttp.ClientTimeout(connect=3.0, sock_read=self.timeout),
                    )
            except aiohttp.ConnectionTimeoutError as exc:  # never connected: like refused
                log.warning("upstream.unreachable", service=service, url=base, error=str(exc))
                if attempt == len(bases) - 1:
                    raise ServiceUnavailable(f"{service} is unavailable; retry shortly") from exc
                continue
            except TimeoutError as exc:
                raise GatewayTimeout(f"{service} did not answer in time") from exc
            except (aiohttp.ClientError, OSError) as exc:
                log.warning("upstream.unreachable", service=service, url=base, error=str(exc))
                if has_body or attempt == len(bases) - 1:
                    raise ServiceUnavailable(f"{service} is unavailable; retry shortly") from exc
                continue
            bounded = not has_body or _small_body(request)  # sent with a read timeout
            response = await self._response(request, resp, service, bounded=bounded)
            # Raw pairs, so repeated headers (Set-Cookie) stay separate.
            response.raw_headers = [
                (k.lower(), v) for k, v in resp.raw_headers if k.lower() not in _NOT_RETURNED
            ]
            return response
        raise ServiceUnavailable(f"{service} is unavailable; retry shortly")

    async def _response(
        self, request: Request, resp: aiohttp.ClientResponse, service: str, bounded: bool
    ) -> Response:
        """A small answer (a job, a page of providers) read whole and sent in one piece; a
        large or open-ended one streamed. Streaming cost the gateway a task group and a
        worker-thread hop (the release callback) per request: ~1/3 of its CPU per proxied
        read (issue 12)."""
        size = resp.content_length
        if request.method == "HEAD" or size is None or size > SMALL_BODY:
            return StreamingResponse(
                self._body(resp, bounded=bounded),
                status_code=resp.status,
                background=BackgroundTask(_release, resp),
            )
        try:
            if bounded:
                body = await resp.read()
            else:
                body = await asyncio.wait_for(resp.read(), self.timeout)
        except TimeoutError as exc:
            raise GatewayTimeout(f"{service} did not answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("upstream.broken", service=service, error=str(exc))
            raise ServiceUnavailable(f"{service} is unavailable; retry shortly") from exc
        finally:
            resp.release()
        return Response(body, status_code=resp.status)

    async def _send_small_body(
        self, request: Request, url: str, headers: list[tuple[str, str]]
    ) -> aiohttp.ClientResponse:
        """A small body (a heartbeat, a registration) read whole and sent in one piece: no
        task, event and ``wait_for`` per request as streaming needs (``_send_with_body``).
        Only for methods aiohttp never sends twice (``_small_body``)."""
        return await self.session.request(
            request.method,
            URL(url, encoded=True),
            headers=headers,
            data=await request.body(),
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(connect=3.0, sock_read=self.timeout),
        )

    async def _send_with_body(
        self, request: Request, url: str, headers: list[tuple[str, str]]
    ) -> aiohttp.ClientResponse:
        """Stream the body up, then give the service ``timeout`` to answer.

        aiohttp's read timeout would start with the request, so a long upload (1 GiB at
        30 MiB/s) would time out while it is still being sent: the clock starts when the
        body has been read instead.
        """
        sent = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            async for chunk in request.stream():
                yield chunk
            sent.set()

        call = asyncio.ensure_future(
            self.session.request(
                request.method,
                URL(url, encoded=True),
                headers=headers,
                data=body(),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(connect=3.0),
            )
        )
        try:
            waiter = asyncio.ensure_future(sent.wait())
            await asyncio.wait({call, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            return await asyncio.wait_for(call, self.timeout)
        except BaseException:
            call.cancel()
            raise

    async def _body(self, resp: aiohttp.ClientResponse, bounded: bool) -> AsyncIterator[bytes]:
        """The response body as it arrives. Requests sent with a read timeout have each read
        bounded by it; the others (with a body) by ``wait_for``, which costs a task per read
        and so is kept off downloads."""
        try:
            while True:
                if bounded:
                    chunk = await resp.content.readany()
                else:
                    chunk = await asyncio.wait_for(resp.content.readany(), self.timeout)
                if not chunk:
                    break
                yield chunk
        finally:
            resp.release()


def _small_body(request: Request) -> bool:
    """A body read whole before it is sent: a declared length up to ``SMALL_BODY``, and a
    method aiohttp never sends a second time on a fresh connection (its idempotent ones it
    would, and a request with a body is sent once: tests/gateway/test_crash.py)."""
    if request.method not in ("POST", "PATCH"):
        return False
    length = request.headers.get("content-length", "")
    return length.isdigit() and int(length) <= SMALL_BODY


async def _release(resp: aiohttp.ClientResponse) -> None:
    """``resp.release`` as a coroutine: Starlette runs a plain function given as a background
    task in a worker thread."""
    resp.release()
