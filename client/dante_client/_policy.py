"""When to retry and how long to wait: one policy for the sync and the async client.

Idempotent calls (GET, HEAD, PUT, DELETE) are retried on 502/503/504 and on a dropped
connection, with exponential back-off and jitter. Anything may be retried when the connection
could not even be opened (nothing was sent) or on 429 (the gateway refused it before any
upstream saw it), after ``Retry-After``. A POST that may have reached a service is never
repeated: submitting a job twice would run it twice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

from dante_client.errors import retry_after_seconds

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass
class RetryPolicy:
    retries: int = 4  # extra attempts after the first
    base_delay: float = 0.25  # seconds; doubles per attempt
    max_delay: float = 8.0
    max_retry_after: float = 60.0  # never sleep longer than this on a server's Retry-After

    def backoff(self, attempt: int) -> float:
        """Half fixed, half random, so many clients retrying at once spread out."""
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def after_exception(self, exc: Exception, attempt: int, idempotent: bool) -> float | None:
        """Seconds to wait before another try, or None to give up."""
        if attempt >= self.retries:
            return None
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return self.backoff(attempt)  # the request never left: safe for any method
        if idempotent and isinstance(exc, httpx.TransportError):
            return self.backoff(attempt)
        return None

    def after_status(
        self, status: int, headers: httpx.Headers, attempt: int, idempotent: bool
    ) -> float | None:
        if attempt >= self.retries:
            return None
        if status == 429:
            wait = retry_after_seconds(headers.get("retry-after"))
            return min(wait, self.max_retry_after) if wait is not None else self.backoff(attempt)
        if status in RETRY_STATUSES and idempotent:
            return self.backoff(attempt)
        return None
