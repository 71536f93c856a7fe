"""Per-user and per-client-address token buckets at the gateway; over the limit → 429.

Pure ASGI, in front of routing, so a flood is refused before it costs a token verification
on every route or a byte sent upstream. The buckets live in this process: with N gateway
replicas behind a load balancer a client gets up to N times the rate (documented in
docs/auth.md). The user is identified by a verified token (a forged ``sub`` must not drain
somebody else's bucket); verified tokens are remembered briefly so each costs one RSA check.

Provider daemons (a token bound to a provider id) have their own bucket per provider, and once
their token is known they no longer draw on the address bucket: heartbeats must not get 429
because a busy client shares the host's address (issue 18).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from jose import jwt
from jose.exceptions import JOSEError
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


def _claims_provider(token: str | None) -> bool:
    """Does the (not yet verified) token say it is a provider's? Only decides whether to
    verify it now; the bucket is chosen from the verified claims."""
    if not token:
        return False
    try:
        return bool(jwt.get_unverified_claims(token).get("pid"))
    except (JOSEError, ValueError, TypeError, AttributeError):
        return False


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
        # token → (bucket, key, exp): bucket "user" or "provider"
        self._known: OrderedDict[str, tuple[str, str, float]] = OrderedDict()

    @staticmethod
    def _token(scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and rest.strip():
                    return rest.strip()
                return None
        return None

    def _remembered(self, token: str | None) -> tuple[str, str] | None:
        known = self._known.get(token) if token else None
        if known is not None and known[2] > time.time():
            return known[0], known[1]
        return None

    async def _verify(self, scope: Scope, token: str | None) -> tuple[str, str] | None:
        if token is None:
            return None
        try:
            principal = await scope["app"].state.verifier.verify(token)
        except DanteError:
            return None  # the route answers 401; the address bucket already counted it
        scope.setdefault("state", {})["principal"] = principal  # the route needs no 2nd verify
        if principal.provider_id is not None:
            bucket = ("provider", principal.provider_id)
        else:
            bucket = ("user", principal.user_id)
        self._known[token] = (*bucket, time.time() + 60)
        if len(self._known) > 10_000:
            self._known.popitem(last=False)
        return bucket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        token = self._token(scope)
        bucket = self._remembered(token)
        wait = 0.0
        by = "address"
        if bucket is None or bucket[0] != "provider":
            # Unknown tokens (and no token) pay at the address first, before an RSA check;
            # one that claims a provider is checked even when the address is spent, so a
            # daemon's fresh token is not starved by its neighbours either.
            client = scope.get("client")
            wait = self.ips.take(client[0] if client else "unknown")
            if bucket is None and (not wait or _claims_provider(token)):
                bucket = await self._verify(scope, token)
                if bucket is not None and bucket[0] == "provider":
                    wait = 0.0
        if not wait and bucket is not None:
            by, key = bucket
            wait = (self.providers if by == "provider" else self.users).take(key)
        if wait:
            rate_limited.labels(by).inc()
            headers = {"Retry-After": str(max(1, math.ceil(wait)))}
            response = error_response(429, "rate_limited", f"too many requests per {by}", headers)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
