"""Task statuses → ``jobs.status.<job_id>``: retried, because the scheduler relies on them, but
only until the drain gives up on them (so SIGTERM always ends the daemon)."""

from __future__ import annotations

import asyncio

import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter

from provider_daemon.fence import Unreported
from shared.contracts import JobState, TaskDispatch, TaskStatus, status_subject
from shared.db import utcnow
from shared.loops import Backoff, Stopped, retry
from shared.nats import publish

log = structlog.get_logger(__name__)

REPORT_BACKOFF = Backoff(base=0.25, cap=5.0, jitter=0.5)  # 0.5 s doubling to 5 s

statuses_abandoned = Counter(
    "dante_daemon_statuses_abandoned_total",
    "Task statuses never published: NATS stayed unreachable past the drain.",
)


class Reporter:
    def __init__(self, js: JetStreamContext, unreported: Unreported | None = None) -> None:
        self.js = js
        self.give_up = asyncio.Event()  # set by the drain once its grace period is spent
        # an attempt's last status (terminal, or "queued" when handed back) is journalled
        # before it is published, and re-sent by the next start if it never was
        self.unreported = unreported

    async def resend(self) -> None:
        """Publish the final statuses a previous run of this daemon owed (killed, or NATS away
        past its drain); the scheduler settles those attempts from them."""
        for status in self.unreported or ():
            log.info(
                "status.resend", job_id=status.job_id, attempt=status.attempt, state=status.state
            )
            await self._publish(status, None)

    async def report(
        self,
        task: TaskDispatch,
        state: JobState,
        exit_code: int | None = None,
        error: str | None = None,
        artifacts: list[str] | None = None,
    ) -> bool:
        """Publish a status; retried until the stream has it or ``give_up`` is set (then the
        scheduler requeues the job once the registry marks this stopped host offline).
        True if it was published."""
        status = TaskStatus(
            job_id=task.job_id,
            attempt=task.attempt,
            provider_id=task.provider_id,
            state=state,
            exit_code=exit_code,
            error=error,
            artifacts=artifacts or [],
            at=utcnow(),
        )
        if self.unreported is not None and (state.terminal or state == JobState.QUEUED):
            self.unreported.add(status)
        return await self._publish(status, task.correlation_id)

    async def _publish(self, status: TaskStatus, correlation_id: str | None) -> bool:
        subject = status_subject(status.job_id)
        # the stream drops a resent duplicate; the provider is in it because a gang job's
        # ranks (issue 17) report the same attempt and state from different providers
        msg_id = f"{status.job_id}:{status.attempt}:{status.state}:{status.provider_id}"

        async def send() -> None:
            await publish(self.js, subject, status, msg_id=msg_id, correlation_id=correlation_id)

        try:
            await retry(
                "status", send, stop=self.give_up, backoff=REPORT_BACKOFF, unhealthy_after=3
            )
        except Stopped:
            statuses_abandoned.inc()
            log.error(
                "status.abandoned",
                job_id=status.job_id,
                attempt=status.attempt,
                state=str(status.state),
            )
            return False
        if self.unreported is not None:
            self.unreported.done((status.job_id, status.attempt))
        return True
