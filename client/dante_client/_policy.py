"""When to retry and how long to wait: one policy for the sync and the async client.

Idempotent calls (GET, HEAD, PUT, DELETE) are retried on 502/503/504 and on a dropped
connection, with exponential back-off and jitter. Anything may be retried when the connection
could not even be opened (nothing was sent) or on 429 (the gateway refused it before any
upstream saw it), after ``Retry-After``. A POST that may have reached a service is never
repeated, except a job submission: it carries an ``Idempotency-Key`` (the same on every try),
so the gateway answers a retry with the same job instead of a second one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import httpx

from dante_client._tokens import TokenState
from dante_client.errors import (
    DanteError,
    InvalidRequest,
    ServiceUnavailable,
    Unreachable,
    from_response,
    retry_after_seconds,
)

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


def http_options(url: str, timeout: float, transport: Any, user_agent: str) -> dict[str, Any]:
    """What ``httpx.Client`` and ``httpx.AsyncClient`` are built with, the same for both."""
    return {
        "base_url": url,
        "timeout": httpx.Timeout(timeout, connect=10.0),
        "transport": transport,
        "headers": {"user-agent": user_agent},
    }


@dataclass
class Attempts:
    """One call's tries: what to do after each failure. The sync and async clients run the
    loop (send, sleep, refresh); every decision is taken here, so both decide alike."""

    policy: RetryPolicy
    url: str
    idempotent: bool
    auth: bool = True
    tokens: TokenState | None = None
    attempt: int = 0
    renewed: bool = False

    def after_exception(self, exc: httpx.TransportError) -> float:
        """Seconds to wait before the next try; raises the DanteError when there is none."""
        delay = self.policy.after_exception(exc, self.attempt, self.idempotent)
        if delay is None:
            raise transport_error(self.url, exc) from exc
        self.attempt += 1
        return delay

    def renew(self, resp: httpx.Response) -> bool:
        """True: a 401 that fresh tokens may cure (once per call); refresh, then try again."""
        if (
            resp.status_code == 401
            and self.auth
            and not self.renewed
            and self.tokens is not None
            and self.tokens.can_refresh()
        ):
            self.renewed = True
            return True
        return False

    def retry_after(self, resp: httpx.Response) -> float | None:
        """Seconds to wait before trying an error response again; None: it is the answer."""
        delay = self.policy.after_status(
            resp.status_code, resp.headers, self.attempt, self.idempotent
        )
        if delay is not None:
            self.attempt += 1
        return delay


def transport_error(url: str, exc: Exception) -> DanteError:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return Unreachable(f"cannot reach the gateway at {url}: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return ServiceUnavailable(f"the gateway at {url} did not answer in time")
    return Unreachable(f"the connection to {url} failed: {exc}")


def response_error(resp: httpx.Response) -> DanteError:
    """The DanteError for a 4xx/5xx response (its body read)."""
    try:
        body: Any = resp.json()
    except ValueError:
        body = resp.text
    err = from_response(resp.status_code, body, dict(resp.headers))
    if isinstance(err, InvalidRequest) and resp.status_code == 413:
        err.message = f"too large: {err.message}"
    return err
