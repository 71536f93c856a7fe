"""The reconnect-and-resume bookkeeping of ``follow_logs``, shared by both clients."""

from __future__ import annotations

import json
import time

from dante_client import models, sse
from dante_client._policy import RetryPolicy
from dante_client.errors import DanteError, NotFound, ServiceUnavailable, Unreachable

# A job just submitted may 404 until the scheduler has stored it (a few ms, more under load).
NOT_STORED_GRACE = 15.0


class Follow:
    def __init__(self, policy: RetryPolicy, last_event_id: str | None, max_outage: float) -> None:
        self.policy = policy
        self.last = last_event_id
        self.max_outage = max_outage
        self.started = time.monotonic()
        self.down_since: float | None = None
        self.failures = 0
        self.connected_once = False

    def headers(self) -> dict[str, str]:
        headers = {"accept": "text/event-stream", "cache-control": "no-cache"}
        if self.last:
            headers["last-event-id"] = self.last  # the gateway resumes right after this line
        return headers

    def connected(self) -> None:
        self.down_since, self.failures, self.connected_once = None, 0, True

    def line(self, event: sse.Event) -> models.LogLine | None:
        """The log line an event carries, remembering its id; None for anything else."""
        if event.comment or event.event != "message" or event.data is None:
            return None
        if event.id:
            self.last = event.id
        return models.LogLine(line=json.loads(event.data), id=event.id)

    def failed(self, exc: DanteError) -> None:
        """Re-raise ``exc`` unless it is worth reconnecting."""
        now = time.monotonic()
        if isinstance(exc, NotFound):
            if self.connected_once or now - self.started > NOT_STORED_GRACE:
                raise exc
            return
        if not isinstance(exc, Unreachable | ServiceUnavailable):
            raise exc
        self.down_since = self.down_since or now
        if now - self.down_since > self.max_outage:
            raise exc

    def delay(self) -> float:
        """The stream ended without its ``end`` event, or failed: wait, then resume."""
        self.failures += 1
        return self.policy.backoff(min(self.failures, 5))
