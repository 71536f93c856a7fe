"""Backend request latency and outcome, and whether the object store answers.

:class:`TimedBackend` wraps the configured backend (local disk or S3) and times every call by
operation. A domain answer (not found, exists, bad checksum: a ``DanteError``) is an ``ok`` call
for the store; anything else is an ``error`` and marks ``dante_dependency_up{dependency=
"object_store"}`` 0 until the next call that works (the /ready probe pings every few seconds
under Kubernetes and Consul).
"""

from __future__ import annotations

import functools
import inspect
import time
from typing import Any

from prometheus_client import Counter, Histogram

from shared.errors import DanteError
from shared.metrics import dependency_up

backend_latency = Histogram(
    "dante_storage_backend_request_duration_seconds",
    "Object store call latency (a download's first byte, not its whole body), by operation.",
    ["backend", "op"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
backend_requests = Counter(
    "dante_storage_backend_requests_total",
    "Object store calls, by operation and outcome (ok, error).",
    ["backend", "op", "outcome"],
)


class TimedBackend:
    """Delegates to ``inner``; its coroutine methods are timed, anything else passes through."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name = inner.name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if not inspect.iscoroutinefunction(value):
            return value

        @functools.wraps(value)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            start, outcome = time.perf_counter(), "ok"
            try:
                return await value(*args, **kwargs)
            except DanteError:
                raise
            except Exception:
                outcome = "error"
                raise
            finally:
                backend_latency.labels(self.name, attr).observe(time.perf_counter() - start)
                backend_requests.labels(self.name, attr, outcome).inc()
                dependency_up.labels("object_store").set(1 if outcome == "ok" else 0)

        return timed


def timed(backend: Any) -> Any:
    return TimedBackend(backend)
