"""Per-user and per-client-address token buckets at the gateway; over the limit → 429.

Pure ASGI, in front of routing, so a flood is refused before it costs a token verification
on every route or a byte sent upstream. The buckets live in this process: with N gateway
replicas behind a load balancer a client gets up to N times the rate (documented in
docs/auth.md). The user is identified by a verified token (a forged ``sub`` must not drain
somebody else's bucket); verified tokens are remembered briefly so each costs one RSA check.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import DanteError, error_response

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
        enabled: bool = True,
    ) -> None:
        self.app = app
        self.enabled = enabled
        self.users = TokenBuckets(user_rate, user_burst)
        self.ips = TokenBuckets(ip_rate, ip_burst)
        self._known: OrderedDict[str, tuple[str, float]] = OrderedDict()  # token → (sub, exp)

    async def _user(self, scope: Scope) -> str | None:
        token = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and rest.strip():
                    token = rest.strip()
                break
        if token is None:
            return None
        known = self._known.get(token)
        if known is not None and known[1] > time.time():
            return known[0]
        try:
            principal = await scope["app"].state.verifier.verify(token)
        except DanteError:
            return None  # the route answers 401; the address bucket already counted it
        scope.setdefault("state", {})["principal"] = principal  # the route needs no 2nd verify
        self._known[token] = (principal.user_id, time.time() + 60)
        if len(self._known) > 10_000:
            self._known.popitem(last=False)
        return principal.user_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = self.ips.take(client[0] if client else "unknown")
        by = "address"
        if not wait:
            user = await self._user(scope)
            if user is not None:
                wait = self.users.take(user)
                by = "user"
        if wait:
            rate_limited.labels(by).inc()
            headers = {"Retry-After": str(max(1, math.ceil(wait)))}
            response = error_response(429, "rate_limited", f"too many requests per {by}", headers)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
