"""An app served in-process: its lifespan run here, requests over ``httpx.ASGITransport``.

Where the process boundary is not what a test is about, this saves a process start and a
socket per request; the app, its database and NATS are the real ones."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx


@contextlib.asynccontextmanager
async def served(
    app: Any, base_url: str = "http://app.test", *, peer: tuple[str, int] = ("127.0.0.1", 123)
) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan ourselves (no asgi-lifespan) and talk to it in-process, as a
    client at ``peer``."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=peer)
        async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=60) as client:
            yield client
