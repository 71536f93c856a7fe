"""NATS JetStream helpers: the stream catalogue, connection, headers and a pull-consumer loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DiscardPolicy, RetentionPolicy, StreamConfig
from nats.js.errors import FetchTimeoutError, NotFoundError
from prometheus_client import Counter
from pydantic import BaseModel

from shared.logging import correlation
from shared.nats_auth import KeyPair, read_creds

log = structlog.get_logger(__name__)

CORRELATION = "Dante-Correlation-Id"
"""NATS header carrying the correlation id from the gateway request onwards."""

DAY = 24 * 3600

STREAMS: dict[str, StreamConfig] = {
    # Work queues: a message leaves the stream once its one consumer acked it.
    "JOBS": StreamConfig(
        name="JOBS",
        subjects=["jobs.submitted"],
        retention=RetentionPolicy.WORK_QUEUE,
        max_age=7 * DAY,
        duplicate_window=120,
    ),
    "TASKS": StreamConfig(
        name="TASKS",
        subjects=["tasks.dispatch.*"],
        retention=RetentionPolicy.WORK_QUEUE,
        max_age=7 * DAY,
        duplicate_window=120,
    ),
    "STATUS": StreamConfig(
        name="STATUS",
        subjects=["jobs.status.*"],
        retention=RetentionPolicy.WORK_QUEUE,
        max_age=7 * DAY,
        duplicate_window=120,
    ),
    # Logs are read live and are bounded: a day or 1 GiB, oldest dropped first.
    "LOGS": StreamConfig(
        name="LOGS",
        subjects=["jobs.logs.*"],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=DAY,
        max_bytes=1 << 30,
    ),
    "EVENTS": StreamConfig(
        name="EVENTS",
        subjects=["providers.events.*", "jobs.events.*"],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=7 * DAY,
        max_bytes=1 << 30,
    ),
    # Usage for billing: a work queue like JOBS (billing is its one consumer). Kept 30 days so
    # a billing outage of weeks still settles everything once billing is back.
    "USAGE": StreamConfig(
        name="USAGE",
        subjects=["usage.recorded.*"],
        retention=RetentionPolicy.WORK_QUEUE,
        max_age=30 * DAY,
        duplicate_window=120,
    ),
}

messages_handled = Counter(
    "dante_nats_messages_total",
    "JetStream messages handled, by consumer and outcome (ack, nak, term).",
    ["consumer", "outcome"],
)


CREDS_ENV = "DANTE_NATS_CREDS"
"""A ``.creds`` file for services on a permissioned server (see docs/nats.md); unset: no auth."""


@dataclass
class UserCredentials:
    """A NATS user: its nkey (the seed stays in this process) and a JWT that may be replaced
    while connected; a reconnect presents whatever ``jwt`` holds then."""

    key: KeyPair
    jwt: str
    inbox_prefix: str = "_INBOX"

    @classmethod
    def from_file(cls, path: str) -> UserCredentials:
        jwt, seed = read_creds(open(path).read())  # noqa: SIM115 - a small file read once
        return cls(KeyPair.from_seed(seed), jwt)


def auth_options(creds: UserCredentials | None) -> dict[str, object]:
    """nats-py connect options that present ``creds`` (none: connect without a user)."""
    if creds is None:
        return {}
    return {
        "user_jwt_cb": lambda: creds.jwt.encode(),
        "signature_cb": creds.key.sign_nonce,
        "inbox_prefix": creds.inbox_prefix,
    }


async def connect(url: str, name: str, credentials: UserCredentials | None = None) -> NATS:
    """Connect with unbounded reconnects: a NATS restart must not take a service down.

    Without ``credentials``, a service uses the creds file named by ``DANTE_NATS_CREDS``, if any.
    """
    if credentials is None and os.environ.get(CREDS_ENV):
        credentials = UserCredentials.from_file(os.environ[CREDS_ENV])
    auth = auth_options(credentials)

    async def _disconnected() -> None:
        log.warning("nats.disconnected", client=name)

    async def _reconnected() -> None:
        log.info("nats.reconnected", client=name)

    async def _error(exc: Exception) -> None:
        log.warning("nats.error", client=name, error=str(exc))

    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=5,
        disconnected_cb=_disconnected,
        reconnected_cb=_reconnected,
        error_cb=_error,
        **auth,  # type: ignore[arg-type]
    )


async def close_nats(nc: NATS) -> None:
    """Drain on the way out; a connection already lost just closes."""
    try:
        await nc.drain()
    except Exception:
        await nc.close()


async def ensure_streams(js: JetStreamContext, names: list[str] | None = None) -> None:
    """Create (or bring up to date) the streams this process uses. Safe to run on every start."""
    for name in names or list(STREAMS):
        config = STREAMS[name]
        try:
            await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("nats.stream_created", stream=name)
        else:
            await js.update_stream(config)


def headers(correlation_id: str | None, msg_id: str | None = None) -> dict[str, str]:
    out: dict[str, str] = {}
    if correlation_id:
        out[CORRELATION] = correlation_id
    if msg_id:
        out["Nats-Msg-Id"] = msg_id
    return out


def correlation_of(msg: Msg) -> str | None:
    return (msg.headers or {}).get(CORRELATION)


class Poison(Exception):
    """A message that can never be handled: terminate it, do not redeliver."""


class Retry(Exception):
    """A transient failure: redeliver after ``delay`` seconds."""

    def __init__(self, reason: str, delay: float = 2.0) -> None:
        super().__init__(reason)
        self.delay = delay


Handler = Callable[[Msg], Awaitable[None]]


@dataclass
class PullConsumer:
    """A durable pull consumer driven by a short, explicit loop.

    Per message: handle → ``ack``; :class:`Poison` → ``term`` (logged, counted); any other
    error → ``nak`` with a delay. Cancellation leaves the message unacked so it is redelivered.
    While idle, fetches one message with a long poll so a new message is handled at once; after
    a hit, it drains the backlog in batches with a short poll (a batched long poll would hold a
    lone message until the poll expires).
    """

    js: JetStreamContext
    stream: str
    durable: str
    subject: str
    handler: Handler
    batch: int = 32
    idle_poll: float = 5.0
    ack_wait: float = 30.0
    max_deliver: int = 10

    async def run(self, stop: asyncio.Event) -> None:
        config = ConsumerConfig(
            # The name too, so nats-py creates it on CONSUMER.CREATE.<stream>.<name>.<filter>:
            # a daemon's NATS user may create only its own consumer with its own filter.
            name=self.durable,
            durable_name=self.durable,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            filter_subject=self.subject,
        )
        sub = await self.js.pull_subscribe(
            self.subject, durable=self.durable, stream=self.stream, config=config
        )
        busy = False
        failures = 0
        try:
            while not stop.is_set():
                try:
                    if busy:
                        msgs = await sub.fetch(self.batch, timeout=0.05)
                    else:
                        msgs = await sub.fetch(1, timeout=self.idle_poll)
                except (NatsTimeoutError, FetchTimeoutError, TimeoutError):
                    busy = False
                    continue
                except Exception as exc:  # connection trouble: back off with jitter
                    failures += 1
                    delay = min(30.0, 0.5 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.5)
                    log.warning("consumer.fetch_failed", consumer=self.durable, error=str(exc))
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                busy = bool(msgs)
                for msg in msgs:
                    await self._handle(msg)
        finally:
            with contextlib.suppress(Exception):  # best effort on shutdown
                await sub.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        with correlation(correlation_of(msg), subject=msg.subject):
            try:
                await self.handler(msg)
            except Poison as exc:
                log.error("consumer.poison", consumer=self.durable, reason=str(exc))
                messages_handled.labels(self.durable, "term").inc()
                await msg.term()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = exc.delay if isinstance(exc, Retry) else 2.0
                log.warning(
                    "consumer.retry",
                    consumer=self.durable,
                    error=str(exc) or type(exc).__name__,
                    delivered=msg.metadata.num_delivered,
                )
                messages_handled.labels(self.durable, "nak").inc()
                await msg.nak(delay=delay)
            else:
                messages_handled.labels(self.durable, "ack").inc()
                await msg.ack()


async def publish(
    js: JetStreamContext,
    subject: str,
    message: BaseModel,
    *,
    msg_id: str | None = None,
    correlation_id: str | None = None,
    ack_timeout: float = 5.0,
) -> None:
    """Publish a contract message and wait for the stream's ack (at-least-once from here on)."""
    await js.publish(
        subject,
        message.model_dump_json().encode(),
        timeout=ack_timeout,
        headers=headers(correlation_id, msg_id) or None,
    )
