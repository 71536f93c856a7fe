"""A crash in dev costs one short traceback and keeps the connection; the gateway sends an
idempotent request again when the service closed the connection before answering, and never
a request with a body (issue 18)."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_gateway.main import create_app
from api_gateway.settings import GatewaySettings
from tests.support.servers import free_port, spawned, wait_for_port

CRASHY = """
import sys
from contextlib import asynccontextmanager
from shared.app import create_service_app, serve, setup_logging
from shared.settings import ServiceSettings

settings = ServiceSettings(service_name="crashy", port=int(sys.argv[1]), environment="dev")
setup_logging(settings)

@asynccontextmanager
async def lifespan(app):
    yield

app = create_service_app(settings, title="crashy", lifespan=lifespan)

def deep(n):
    ballast = {str(i): list(range(50)) for i in range(200)}  # locals a renderer could dump
    if n == 0:
        raise RuntimeError("kaput")
    return deep(n - 1) or ballast

@app.get("/boom")
async def boom():
    deep(40)

serve(app, settings)
"""


def http_exchange(sock: socket.socket, path: str) -> tuple[int, bytes]:
    """One request on an open connection; its status and body."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[
            1
        ]
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ")[1]), body


def test_a_crash_in_dev_logs_one_short_traceback_and_keeps_the_connection(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DANTE_")}
    log = tmp_path / "crashy.log"
    argv = [sys.executable, "-c", CRASHY, str(port)]
    with spawned(argv, env, log, cwd=Path(__file__).parents[2]) as proc:
        wait_for_port(port, timeout=60, proc=proc)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            for _ in range(2):  # the same connection serves both
                status, body = http_exchange(sock, "/boom")
                assert status == 500 and json.loads(body)["error"] == "internal_error"
            assert http_exchange(sock, "/health")[0] == 200
    text = log.read_text(errors="replace")
    assert text.count("request.crashed") == 2
    assert "Exception in ASGI application" not in text  # logged once, by us
    assert "RuntimeError: kaput" in text and "ballast" not in text  # no locals dumped
    assert len(text.splitlines()) < 100, len(text.splitlines())


class Upstream:
    """A raw HTTP/1.1 server that answers keep-alive, but closes the first connection unanswered
    on its second request, as a service does that drops a pooled connection (or ``always``)."""

    def __init__(self, always: bool = False) -> None:
        self.always = always
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[str] = []
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._conn, args=(conn, self.connections), daemon=True).start()

    def _conn(self, conn: socket.socket, number: int) -> None:
        with conn:
            served = 0
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length"):
                        length = int(line.split(b":")[1])
                        while len(buf) < length:
                            buf += conn.recv(65536)
                        buf = buf[length:]
                self.requests.append(head.split(b" ")[0].decode())
                if self.always or (number == 1 and served == 1):
                    return  # closed without an answer
                body = b'{"keys": []}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
                served += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def gateway_to(nats_url: str, local_jwks: Callable[[], Any]) -> Callable[[Upstream], Any]:
    import contextlib

    @contextlib.asynccontextmanager
    async def make(upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
        settings = GatewaySettings(
            nats_url=nats_url, port=1, static_services={"auth": [upstream.url]}
        )
        app = create_app(settings, jwks=local_jwks)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                yield client

    return make


@pytest.fixture
def upstream() -> Iterator[Callable[..., Upstream]]:
    made: list[Upstream] = []

    def make(**kw: Any) -> Upstream:
        made.append(Upstream(**kw))
        return made[-1]

    yield make
    for u in made:
        u.close()


async def test_an_idempotent_request_is_sent_again_on_a_connection_closed_unanswered(
    gateway_to: Callable[[Upstream], Any], upstream: Callable[..., Upstream]
) -> None:
    up = upstream()
    async with gateway_to(up) as gw:
        assert (await gw.get("/.well-known/jwks.json")).status_code == 200
        # the pooled connection is reused, closed unanswered, and the GET sent again (by
        # aiohttp, the gateway's upstream client)
        r = await gw.get("/.well-known/jwks.json")
        assert r.status_code == 200 and r.json() == {"keys": []}
    assert up.requests == ["GET", "GET", "GET"] and up.connections == 2


async def test_a_request_with_a_body_is_never_sent_twice(
    gateway_to: Callable[[Upstream], Any], upstream: Callable[..., Upstream]
) -> None:
    up = upstream()
    async with gateway_to(up) as gw:
        assert (await gw.get("/.well-known/jwks.json")).status_code == 200
        r = await gw.post("/api/v1/auth/login", json={"username": "a", "password": "b"})
        assert r.status_code == 503 and r.json()["error"] == "service_unavailable"
    assert up.requests == ["GET", "POST"]


async def test_a_service_that_never_answers_gets_one_retry_then_503(
    gateway_to: Callable[[Upstream], Any], upstream: Callable[..., Upstream]
) -> None:
    up = upstream(always=True)
    async with gateway_to(up) as gw:
        r = await gw.get("/.well-known/jwks.json")
        assert r.status_code == 503
    assert up.requests == ["GET", "GET"]
