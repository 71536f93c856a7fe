"""uvicorn's HTTP protocol with the limits every Dante service needs in front of the internet.

uvicorn (0.54, httptools) has no header size or count limit and no timeout before the first
request: an 8 MiB header line was buffered whole, and a connection that sends nothing, or a
header line every few seconds, stayed open for ever (issue 18). This subclass adds:

* a byte limit on the request line + headers (``max_header_bytes``, 32 KiB) and a count limit
  (``max_headers``, 100): over either → ``431`` and the connection is closed;
* a request-header timeout (``header_timeout``, 10 s): from the connection's start, or from the
  first byte of a keep-alive connection's next request, until its headers are complete; a
  connection that has not sent them by then gets ``408`` and is closed. Idle keep-alive
  connections keep uvicorn's own ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import json
import resource
from typing import Any

import httptools
import structlog
from prometheus_client import Counter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = structlog.get_logger(__name__)

refused = Counter(
    "dante_http_connections_refused_total",
    "Connections closed before a request: headers too large, too many, or too slow.",
    ["reason"],
)


class HeaderLimit(Exception):
    """Raised inside a parser callback; httptools hands it back as the error's context."""


_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class LimitedHttpProtocol(HttpToolsProtocol):
    max_header_bytes = 32 * 1024
    max_headers = 100
    header_timeout = 10.0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._received = 0  # bytes of the request line and headers seen so far
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting = True
        self._arm()  # a connection that never sends a byte is closed too

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if self._awaiting and not self.transport.is_closing():
            self._refuse(408, "request_timeout", "request headers not received in time")

    def _refuse(self, status: int, code: str, detail: str) -> None:
        refused.labels(code).inc()
        self._awaiting = False
        self._disarm()
        body = json.dumps({"error": code, "detail": detail}).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, _REASONS[status], len(body), body)
        )
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # --- what uvicorn's data_received does, plus the limits -----------------------------------

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._awaiting:
            self._arm()
            self._received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, HeaderLimit):
                self._refuse(431, "headers_too_large", str(exc.__context__))
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        # httptools keeps a partial header line to itself: bound what it may be holding
        if self._awaiting and self._received > self.max_header_bytes:
            self._refuse(431, "headers_too_large", "request headers too large")

    def on_message_begin(self) -> None:
        # A keep-alive connection's next request (or a pipelined one) starts here: its headers
        # get the same time and size; while idle before it, uvicorn's keep-alive timer rules.
        super().on_message_begin()
        self._awaiting = True
        self._received = 0
        self._count = 0
        self._arm()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count += 1
        if self._count > self.max_headers:
            raise HeaderLimit(f"more than {self.max_headers} request headers")
        if len(name) + len(value) > self.max_header_bytes:
            raise HeaderLimit("request headers too large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting = False
        self._received = 0
        self._disarm()
        super().on_headers_complete()


def limited_protocol(
    *, max_header_bytes: int, max_headers: int, header_timeout: float
) -> type[LimitedHttpProtocol]:
    """The protocol class for ``uvicorn.run(http=...)`` with these limits."""
    return type(
        "DanteHttpProtocol",
        (LimitedHttpProtocol,),
        {
            "max_header_bytes": max_header_bytes,
            "max_headers": max_headers,
            "header_timeout": header_timeout,
        },
    )


def raise_open_file_limit(wanted: int = 65536) -> int:
    """Lift the soft limit on open files towards the hard one: each held connection is a file,
    and at the common default of 1,024 about a thousand idle connections starved ``/health``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("nofile.not_raised", soft=soft, hard=hard, error=str(exc))
    return soft
