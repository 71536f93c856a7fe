"""Per-user and per-client-address token buckets at the gateway; over the limit → 429.

Pure ASGI, in front of routing, so a flood is refused before a byte is sent upstream. The
user is the caller ``api_gateway.auth.Authenticate`` verified just before (one RS256 check
per request, which the route then reuses). The buckets live in this process: with N gateway
replicas behind a load balancer a client gets up to N times the rate (documented in
docs/auth.md).

Provider daemons (a token bound to a provider id) have their own bucket per provider and do not
draw on the address bucket: heartbeats must not get 429 because a busy client shares the host's
address (issue 18).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.auth import AUTHENTICATED
from shared.errors import error_response

rate_limited = Counter(
    "dante_gateway_rate_limited_total", "Requests refused by a rate limit.", ["by"]
)
EXEMPT = ("/health", "/ready", "/metrics")


@dataclass
class Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """``rate`` tokens per second up to ``burst``; least recently used keys are forgotten
    past ``max_keys`` (a forgotten key starts full again, which only errs on the kind side)."""

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """Take one token; 0 if allowed, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = Bucket(float(self.burst), now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate


class RateLimit:
    def __init__(
        self,
        app: ASGIApp,
        *,
        user_rate: float,
        user_burst: int,
        ip_rate: float,
        ip_burst: int,
        provider_rate: float = 10.0,
        provider_burst: int = 50,
        enabled: bool = True,
    ) -> None:
        self.app = app
        self.enabled = enabled
        self.users = TokenBuckets(user_rate, user_burst)
        self.ips = TokenBuckets(ip_rate, ip_burst)
        self.providers = TokenBuckets(provider_rate, provider_burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        # The caller ``Authenticate`` verified in front of us (never a token's unverified
        # ``sub``: a forged one must not drain somebody else's bucket).
        principal = scope.get("state", {}).get(AUTHENTICATED)
        if principal is not None and principal.provider_id is not None:
            by = "provider"
            wait = self.providers.take(principal.provider_id)
        else:
            client = scope.get("client")
            wait = self.ips.take(client[0] if client else "unknown")
            by = "address"
            if not wait and principal is not None:
                wait = self.users.take(principal.user_id)
                by = "user"
        if wait:
            rate_limited.labels(by).inc()
            headers = {"Retry-After": str(max(1, math.ceil(wait)))}
            response = error_response(429, "rate_limited", f"too many requests per {by}", headers)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
