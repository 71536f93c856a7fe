"""Job submission onto JetStream: idempotent by key, and a 503 that tells the truth.

The job id (and with it the JetStream message id) derives from the caller's user id and its
``Idempotency-Key``, so a retry with the same key names the same job: JetStream's duplicate
window drops the second message, and the scheduler stores a job id once whatever the window.

The publishing connection keeps no reconnect buffer (``pending_size=0``): while NATS is away a
publish fails at once, and then nothing was sent. A publish that was handed to the socket but
never acknowledged (the server died meanwhile, or the ack timed out) may still have reached the
stream, or may sit in nats-py's write queue and go out on reconnect: that 503 says so
(``submission_unknown``), names the job id and asks for a retry with the same key.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import structlog
from nats.aio.client import Client as NATS
from nats.errors import ConnectionClosedError, OutboundBufferLimitError
from nats.js import JetStreamContext

from shared.contracts import JOBS_SUBMITTED, JobSubmitted
from shared.errors import BadRequest, ServiceUnavailable
from shared.nats import publish

log = structlog.get_logger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
# What a key may be: printable ASCII without spaces, 1-255 characters (a UUID is typical).
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
# A fixed namespace: the same (user, key) names the same job on every gateway replica.
_JOBS_NAMESPACE = uuid.UUID("6f9d1c56-3b7e-5d0a-9a51-4c7a2c1f0e19")
RETRY_AFTER_SECONDS = 5


def job_id_for(user_id: str, key: str | None) -> str:
    """The job id for a submission: derived from (user, key) when a key is given (a retry
    gets the same id; another user's equal key does not), random otherwise."""
    if key is None:
        return str(uuid.uuid4())
    if not valid_key(key):
        raise BadRequest(
            f"{IDEMPOTENCY_HEADER} must be 1-255 printable ASCII characters without spaces"
        )
    return str(uuid.uuid5(_JOBS_NAMESPACE, f"{user_id}\n{key}"))


def valid_key(key: str) -> bool:
    """Whether ``key`` may name a submission (see ``_KEY``)."""
    return _KEY.match(key) is not None


class SubmissionUnknown(ServiceUnavailable):
    """The job queue did not confirm the message: the job may or may not exist."""

    code = "submission_unknown"


@dataclass
class Submissions:
    """The gateway's own publishing connection (no reconnect buffer) and its JetStream."""

    nc: NATS
    js: JetStreamContext
    ack_timeout: float = 5.0

    async def submit(self, message: JobSubmitted, correlation_id: str | None, keyed: bool) -> None:
        """Publish and wait for the stream's ack; raise a 503 that says whether the job can
        exist (``submission_unknown``) or certainly does not (``service_unavailable``)."""
        retry_after = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        if not self.nc.is_connected:
            raise ServiceUnavailable(
                "the job queue is unavailable; nothing was submitted", headers=retry_after
            )
        try:
            await publish(
                self.js,
                JOBS_SUBMITTED,
                message,
                msg_id=message.job_id,
                correlation_id=correlation_id,
                ack_timeout=self.ack_timeout,
            )
        except (OutboundBufferLimitError, ConnectionClosedError) as exc:
            # raised before anything was written: not buffered, never sent
            log.error("job.publish_refused", job_id=message.job_id, error=type(exc).__name__)
            raise ServiceUnavailable(
                "the job queue is unavailable; nothing was submitted", headers=retry_after
            ) from exc
        except Exception as exc:
            log.error("job.publish_unconfirmed", job_id=message.job_id, error=repr(exc))
            how = (
                f"retry with the same {IDEMPOTENCY_HEADER}: you get this job, never a second one"
                if keyed
                else f"see GET /api/v1/jobs/{message.job_id} before submitting again, or send "
                f"an {IDEMPOTENCY_HEADER} so that a retry is safe"
            )
            raise SubmissionUnknown(
                f"the job queue did not confirm job {message.job_id}; it may still be created: "
                + how,
                headers={**retry_after, "Dante-Job-Id": message.job_id},
            ) from exc
