"""The gateway under 2,000 held connections: half idle (connected, nothing sent), half slow
(a request line, then one header line a second, never finished). Measures ``/health`` and a
real proxied request (the JWKS from the auth service behind it) before and while they are held,
and how the held connections end (issue 18).

Real processes: nats-server, the auth service and the gateway on free ports. This process
raises its own open-file limit; the services raise theirs at start (shared/http_server.py).

    python bench/idle_connections.py [--connections 2000] [--hold 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.http_server import raise_open_file_limit
from tests.support.auth import auth_process
from tests.support.servers import free_port, nats_server, spawned, wait_for_port


async def timed(client: httpx.AsyncClient, url: str, n: int) -> tuple[list[float], Counter[int]]:
    ms, codes = [], Counter()
    for _ in range(n):
        start = time.perf_counter()
        try:
            codes[(await client.get(url, timeout=30)).status_code] += 1
        except httpx.HTTPError as exc:
            codes[type(exc).__name__] += 1  # type: ignore[index]
        ms.append((time.perf_counter() - start) * 1000)
    return ms, codes


def summary(name: str, ms: list[float], codes: Counter[int]) -> str:
    ms = sorted(ms)
    p99 = ms[max(0, int(len(ms) * 0.99) - 1)]
    return (
        f"{name:<34} median {statistics.median(ms):7.1f} ms  p99 {p99:7.1f} ms  "
        f"answers {dict(codes)}"
    )


async def hold(port: int, count: int, seconds: float) -> tuple[int, Counter[str]]:
    """Open ``count`` connections (half idle, half dripping headers); return how many were
    opened and how each ended (the server's answer, or still open at the end)."""
    ends: Counter[str] = Counter()
    opened = 0

    async def one(slow: bool) -> None:
        nonlocal opened
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            ends[f"connect failed: {exc.strerror}"] += 1
            return
        opened += 1
        try:
            if slow:
                writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    data = await asyncio.wait_for(reader.read(64), 1.0)
                except TimeoutError:
                    if slow:
                        writer.write(b"X-Drip: 1\r\n")
                    continue
                ends[data.split(b"\r\n")[0].decode() or "closed"] += 1
                return
            ends["still open"] += 1
        except OSError:
            ends["reset"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(one(i % 2 == 1) for i in range(count)))
    return opened, ends


async def run(gateway: str, port: int, count: int, seconds: float) -> None:
    async with httpx.AsyncClient() as client:
        for name, path in (
            ("/health", "/health"),
            ("JWKS via the gateway", "/.well-known/jwks.json"),
        ):
            print(summary(f"{name}, nothing held", *await timed(client, gateway + path, 50)))
        held = asyncio.create_task(hold(port, count, seconds))
        await asyncio.sleep(min(5.0, seconds / 2))  # let them all connect
        for name, path in (
            ("/health", "/health"),
            ("JWKS via the gateway", "/.well-known/jwks.json"),
        ):
            print(summary(f"{name}, {count} held", *await timed(client, gateway + path, 50)))
        opened, ends = await held
        print(f"held connections: {opened} opened; how they ended: {dict(ends)}")


def _soft_nofile(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line.split()[3]
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--hold", type=float, default=15.0, help="seconds to hold them")
    args = parser.parse_args()
    # The services start with the common default soft limit of 1,024 open files (inherited
    # from here) and must lift it themselves; this process lifts its own after starting them.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard > 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    with tempfile.TemporaryDirectory() as tmp, nats_server() as nats_url:
        root = Path(tmp)
        with auth_process(root / "auth") as auth:
            port = free_port()
            settings = {
                "ENVIRONMENT": "dev",
                "PORT": str(port),
                "NATS_URL": nats_url,
                "STATIC_SERVICES": json.dumps({"auth": [auth.url]}),
                "LOG_JSON": "true",
            }
            env = {**os.environ, **{f"DANTE_GATEWAY_{k}": v for k, v in settings.items()}}
            argv = [sys.executable, "-m", "api_gateway", "serve"]
            with spawned(argv, env, root / "gateway.log", cwd=root) as proc:
                wait_for_port(port, timeout=60, proc=proc)
                limit = raise_open_file_limit(args.connections + 1024)
                gw_limit = _soft_nofile(proc.pid)
                print(f"open-file limit: gateway {gw_limit} (started with 1024), bench {limit}")
                asyncio.run(run(f"http://127.0.0.1:{port}", port, args.connections, args.hold))


if __name__ == "__main__":
    main()
