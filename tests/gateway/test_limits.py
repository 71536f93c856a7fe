"""Every service refuses oversized headers and closes slow or idle connections; the gateway
keeps serving ``/health`` and real requests while 150 idle and slow connections are held
(issue 18; bench/idle_connections.py holds 2,000). Real processes: the gateway and the auth
service behind it, on free ports."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.support.auth import AuthProcess, auth_process
from tests.support.servers import free_port, spawned, wait_for_port

HELD = 150
LIMITS = {"HTTP_HEADER_TIMEOUT_SECONDS": "2", "HTTP_KEEPALIVE_SECONDS": "2"}


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthProcess]:
    with auth_process(tmp_path_factory.mktemp("auth-limits"), **LIMITS) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(
    auth: AuthProcess, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    root = tmp_path_factory.mktemp("gateway-limits")
    port = free_port()
    settings = {
        "ENVIRONMENT": "dev",
        "PORT": str(port),
        "NATS_URL": nats_url,
        "STATIC_SERVICES": json.dumps({"auth": [auth.url]}),
        "LOG_JSON": "true",
        **LIMITS,
    }
    env = {**os.environ, **{f"DANTE_GATEWAY_{k}": v for k, v in settings.items()}}
    argv = [sys.executable, "-m", "api_gateway", "serve"]
    with spawned(argv, env, root / "gateway.log", cwd=root) as proc:
        wait_for_port(port, timeout=60, proc=proc)
        yield f"http://127.0.0.1:{port}"


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (the bound only stops a hung run)."""
    sock.settimeout(60)
    out = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            out += chunk
    return out


def test_held_idle_and_slow_connections_do_not_starve_the_gateway(
    gateway: str, auth: AuthProcess
) -> None:
    idle = [connect(gateway) for _ in range(HELD // 2)]
    slow = [connect(gateway) for _ in range(HELD - HELD // 2)]
    for s in slow:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    try:
        # while they are held: liveness, and real requests through to the auth service
        for _ in range(5):
            assert httpx.get(f"{gateway}/health", timeout=30).status_code == 200
            keys = httpx.get(f"{gateway}/.well-known/jwks.json", timeout=30)
            assert keys.status_code == 200 and keys.json()["keys"]
        name = f"u{os.urandom(4).hex()}"
        body = {"username": name, "email": f"{name}@example.com", "password": "long enough pw"}
        assert httpx.post(f"{gateway}/api/v1/auth/register", json=body).status_code == 201
        for s in slow[:10]:  # a header line now and then does not keep a connection alive
            s.sendall(b"X-Drip: 1\r\n")
        # every held connection is closed by the server: 408 for the slow, and for the idle
        # that never sent a byte, too
        answers = [read_all(s) for s in idle + slow]
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:40] for a in answers}
        assert b'"error": "request_timeout"' in answers[-1]
    finally:
        for s in idle + slow:
            s.close()


@pytest.mark.parametrize("service", ["gateway", "auth"])
def test_oversized_or_too_many_headers_are_refused_with_431(
    service: str, gateway: str, auth: AuthProcess
) -> None:
    url = gateway if service == "gateway" else auth.url
    huge = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    many = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-H%d: v\r\n" % i for i in range(200)
    )
    for request in (huge, many + b"\r\n"):
        s = connect(url)
        try:
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                s.sendall(request)
            answer = read_all(s)
        finally:
            s.close()
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
        assert b'"error": "headers_too_large"' in answer
    # ordinary requests with ordinary headers pass
    r = httpx.get(f"{url}/health", headers={f"x-h{i}": "v" * 100 for i in range(50)})
    assert r.status_code == 200


def test_an_idle_keep_alive_connection_is_closed(gateway: str) -> None:
    s = connect(gateway)
    try:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_all(s)  # returns only once the server closes the idle connection
    finally:
        s.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1") == 1


def test_the_services_raise_their_open_file_limit() -> None:
    import resource

    from shared.http_server import raise_open_file_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and hard <= 1024:
            pytest.skip(f"the hard open-file limit here is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        got = raise_open_file_limit(4096)
        assert got == 4096 == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_kept_alive_connection_gets_the_same_header_timeout_for_its_next_request(
    auth: AuthProcess,
) -> None:
    s = connect(auth.url)
    try:
        # two pipelined requests are both answered...
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        got = b""
        while got.count(b"HTTP/1.1 200 ") < 2:
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk
        # ...then the next request's headers never finish: 408, connection closed
        s.sendall(b"GET /health HTTP/1.1\r\n")
        everything = got + read_all(s)
    finally:
        s.close()
    assert everything.count(b"HTTP/1.1 200 ") == 2
    assert everything.endswith(b'"detail": "request headers not received in time"}')
    assert b"HTTP/1.1 408 " in everything
