"""Renewing the daemon's NATS user JWT before it expires."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import structlog

from provider_daemon.client import GatewayClient
from shared.loops import Backoff, ReadyChecks, every
from shared.nats import UserCredentials

log = structlog.get_logger(__name__)

# A failed renewal is tried again from 30 s, doubling to 5 min: the current JWT still works.
RENEW_BACKOFF = Backoff(base=15.0, cap=300.0, jitter=0.2)
NOT_NEEDED = 3600.0  # the platform runs NATS without per-provider users: ask again hourly


def renew_in(expires_at: str) -> float:
    """Seconds to the renewal: two thirds of the JWT's remaining life, at least one."""
    left = datetime.fromisoformat(expires_at).timestamp() - time.time()
    return max(1.0, left * 2 / 3)


async def renew_nats_jwt(
    client: GatewayClient,
    creds: UserCredentials,
    expires_at: str,
    stop: asyncio.Event,
    ready: ReadyChecks | None = None,
) -> None:
    """Fetch a fresh NATS JWT at two thirds of the current one's life. The server closes the
    connection when a JWT expires; the reconnect then presents the fresh one."""

    async def renew() -> float:
        issued = await client.nats_credentials(creds.key.public_key)
        if issued is None:
            return NOT_NEEDED
        creds.jwt = issued["jwt"]
        log.info("nats.jwt_renewed", expires_at=issued["expires_at"])
        return renew_in(issued["expires_at"])

    await every(
        "nats_renew",
        renew,
        renew_in(expires_at),
        stop=stop,
        backoff=RENEW_BACKOFF,
        ready=ready,
        first_after=renew_in(expires_at),
    )
