"""Asking the scheduler before starting an attempt (issue 19, ``scheduler/confirm.py``).

A task message can be fetched a moment before the scheduler requeues its attempt and deletes
it; the daemon's fence and the start deadline cannot see that. So the daemon asks, by NATS
request/reply, just before it starts a task, and starts only on a yes. No answer (the scheduler
away or busy) is not a yes: the task goes back to TASKS and is asked about again later.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from prometheus_client import Counter
from pydantic import ValidationError

from shared.contracts import StartAnswer, StartRequest, TaskDispatch, start_subject
from shared.nats import Retry

log = structlog.get_logger(__name__)

asked = Counter(
    "dante_daemon_start_requests_total",
    "Requests to the scheduler to start an attempt, by outcome (yes, no, unanswered).",
    ["outcome"],
)


@dataclass
class StartGate:
    nc: NATS
    timeout: float = 5.0
    retry_delay: float = 2.0

    async def ask(self, task: TaskDispatch) -> StartAnswer:
        """The scheduler's answer; :class:`Retry` when there is none (the task is redelivered)."""
        req = StartRequest(
            job_id=task.job_id, attempt=task.attempt, rank=task.gang.rank if task.gang else 0
        )
        try:
            reply = await self.nc.request(
                start_subject(task.provider_id),
                req.model_dump_json().encode(),
                timeout=self.timeout,
            )
            answer = StartAnswer.model_validate_json(reply.data)
        except (NatsError, TimeoutError, ValidationError) as exc:
            asked.labels("unanswered").inc()
            why = str(exc) or type(exc).__name__
            raise Retry(
                f"the scheduler did not answer the start request: {why}", delay=self.retry_delay
            ) from exc
        asked.labels("yes" if answer.start else "no").inc()
        return answer
