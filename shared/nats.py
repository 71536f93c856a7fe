"""NATS JetStream helpers: the stream catalogue, connection, headers and a pull-consumer loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import nats
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DiscardPolicy, RetentionPolicy, StreamConfig
from nats.js.errors import APIError, FetchTimeoutError, NotFoundError
from prometheus_client import Counter
from pydantic import BaseModel
from starlette.applications import Starlette

from shared.app import service_state
from shared.contracts import (
    ANY,
    JOBS_SUBMITTED,
    log_subject,
    provider_event_subject,
    status_subject,
    task_subject,
)
from shared.logging import correlation
from shared.loops import Backoff, ReadyChecks, Stopped, every, retry
from shared.nats_auth import KeyPair, read_creds

log = structlog.get_logger(__name__)

CORRELATION = "Dante-Correlation-Id"
"""NATS header carrying the correlation id from the gateway request onwards."""

DAY = 24 * 3600

FETCH_BACKOFF = Backoff(base=0.5, cap=30.0, jitter=0.5)
"""A failing fetch (connection trouble) is tried again after 1 s, doubling to 30 s."""


def _work_queue(name: str, subjects: list[str], max_age: float) -> StreamConfig:
    """A message leaves the stream once its one consumer acked it; retries are deduplicated."""
    return StreamConfig(
        name=name,
        subjects=subjects,
        retention=RetentionPolicy.WORK_QUEUE,
        max_age=max_age,
        duplicate_window=120,
    )


def _bounded(name: str, subjects: list[str], max_age: float) -> StreamConfig:
    """Kept for ``max_age`` or up to 1 GiB, whichever ends first; the oldest go first."""
    return StreamConfig(
        name=name,
        subjects=subjects,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=max_age,
        max_bytes=1 << 30,
    )


LOG_CHUNKS_PER_JOB = 20_000
"""LOGS keeps at most this many chunks per job (``max_msgs_per_subject``, the oldest of that
job go first), so one chatty job cannot evict everyone's live logs; with the daemon's per-attempt
byte cap (``DANTE_DAEMON_LOG_LIVE_MAX_BYTES``, 32 MiB) a job's share is bounded both ways."""

STREAMS: dict[str, StreamConfig] = {
    "JOBS": _work_queue("JOBS", [JOBS_SUBMITTED], 7 * DAY),
    "TASKS": _work_queue("TASKS", [task_subject(ANY)], 7 * DAY),
    "STATUS": _work_queue("STATUS", [status_subject(ANY)], 7 * DAY),
    # Logs are read live and are bounded: a day or 1 GiB, oldest dropped first; per job at
    # most LOG_CHUNKS_PER_JOB chunks. The whole log of each attempt is archived in storage.
    "LOGS": dataclasses.replace(
        _bounded("LOGS", [log_subject(ANY)], DAY), max_msgs_per_subject=LOG_CHUNKS_PER_JOB
    ),
    "EVENTS": _bounded("EVENTS", [provider_event_subject(ANY), "jobs.events.*"], 7 * DAY),
    # Messages a consumer gave up on after its redelivery bound, kept for replay: nothing the
    # platform accepted is dropped silently (issue 18). ``dead.<consumer>``; 30 days.
    "DEAD": _bounded("DEAD", ["dead.>"], 30 * DAY),
    # Usage for billing: a work queue like JOBS (billing is its one consumer). Kept 30 days so
    # a billing outage of weeks still settles everything once billing is back.
    "USAGE": _work_queue("USAGE", ["usage.recorded.*"], 30 * DAY),
}

messages_handled = Counter(
    "dante_nats_messages_total",
    "JetStream messages handled, by consumer and outcome (ack, nak, term, dead, settled).",
    ["consumer", "outcome"],
)
dead_letters = Counter(
    "dante_nats_dead_letters_total",
    "Dead letters, by consumer and what happened (stored, replayed, kept).",
    ["consumer", "action"],
)

# Headers a dead letter carries (besides the original message's own).
DEAD_SUBJECT = "Dante-Dead-Subject"
DEAD_REASON = "Dante-Dead-Reason"
DEAD_DELIVERIES = "Dante-Dead-Deliveries"
REPLAYS = "Dante-Replays"


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


async def connect(
    url: str,
    name: str,
    credentials: UserCredentials | None = None,
    *,
    buffer_while_disconnected: bool = True,
) -> NATS:
    """Connect with unbounded reconnects: a NATS restart must not take a service down.

    Without ``credentials``, a service uses the creds file named by ``DANTE_NATS_CREDS``, if any.
    ``buffer_while_disconnected=False`` turns off nats-py's reconnect buffer: a publish while
    disconnected raises ``OutboundBufferLimitError`` at once instead of being held and sent
    when the server is back (the gateway's job submissions, docs/nats.md).
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
        # "nats://a:4222,nats://b:4222": every node of a cluster, so a client starting while
        # one is down still connects (it also learns the others from the server once in)
        [u.strip() for u in url.split(",") if u.strip()],
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        connect_timeout=5,
        disconnected_cb=_disconnected,
        reconnected_cb=_reconnected,
        error_cb=_error,
        # 0: nothing is buffered while disconnected (nats-py's default holds 2 MiB of publishes)
        **({} if buffer_while_disconnected else {"pending_size": 0}),
        **auth,
    )


async def close_nats(nc: NATS) -> None:
    """Drain on the way out; a connection already lost just closes (and a close that trips
    over the lost socket does not fail the shutdown)."""
    try:
        await nc.drain()
    except Exception:
        with contextlib.suppress(Exception):
            await nc.close()


@dataclass
class NatsRuntime:
    nc: NATS
    js: JetStreamContext


@asynccontextmanager
async def nats_runtime(
    app: Starlette, url: str, name: str, streams: list[str] | None = None
) -> AsyncIterator[NatsRuntime]:
    """A service's NATS connection for its lifetime: streams ensured, ready-checked, drained
    at the end (after whatever the caller stopped inside the block)."""
    nc = await connect(url, name)
    try:
        js = nc.jetstream()
        await ensure_streams(js, streams)
        service_state(app).ready_checks["nats"] = lambda: nc.flush(timeout=2)
        yield NatsRuntime(nc, js)
    finally:
        await close_nats(nc)


REPLICAS_ENV = "DANTE_NATS_STREAM_REPLICAS"
"""Copies JetStream keeps of every stream: 1 on a single server, the cluster size (3) on a
cluster, so a stream survives losing a node. Applied on every start (scaling up is allowed)."""


def stream_replicas() -> int:
    return max(1, int(os.environ.get(REPLICAS_ENV, "1")))


# JetStream API errors a cluster answers while it is still forming or busy, then stops answering:
# no suitable peers (10005: a peer not known yet), a stream name another process just created
# with a config not yet updated (10058), and any 5xx (no leader yet, JetStream unavailable).
_FORMING = {10005, 10058}


def _jetstream_settling(exc: BaseException) -> bool:
    """True for what a fresh or busy JetStream cluster answers and a retry gets past; false for
    a request it will always refuse (a config it cannot apply, a permission)."""
    if isinstance(exc, NatsTimeoutError | NoRespondersError | asyncio.TimeoutError):
        return True
    if isinstance(exc, APIError):
        return (exc.code or 0) >= 500 or exc.err_code in _FORMING
    return False


async def ensure_streams(
    js: JetStreamContext, names: list[str] | None = None, *, within: float = 60.0
) -> None:
    """Create (or bring up to date) the streams this process uses. Safe to run on every start,
    and from every service at once: on a cluster that is still forming, or where another
    service is creating the same stream, a request times out or is refused for a while, so
    each stream is retried (with back-off, for up to ``within`` seconds) before start fails."""
    for name in names or list(STREAMS):
        config = dataclasses.replace(STREAMS[name], num_replicas=stream_replicas())

        async def ensure(name: str = name, config: StreamConfig = config) -> None:
            try:
                await js.stream_info(name)
            except NotFoundError:
                await js.add_stream(config)
                log.info("nats.stream_created", stream=name)
            else:
                await js.update_stream(config)

        await retry(
            f"nats.stream.{name}",
            ensure,
            within=within,
            backoff=Backoff(base=0.2, cap=5.0),
            give_up=lambda exc: not _jetstream_settling(exc),
        )


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
BatchHandler = Callable[[list[Msg]], Awaitable[None]]
"""Applies several messages at once (one transaction); raising sends each message through the
one-at-a-time handler instead, so a bad message is settled on its own as always."""
Exhausted = Callable[[Msg, Exception], Awaitable[bool]]
"""Last chance for a message past its redelivery bound: True if it was settled (e.g. the job
was stored as failed with the reason); False sends it to the dead letters."""


def backoff(deliveries: int, base: float = 1.0, cap: float = 30.0) -> float:
    """Exponential back-off with jitter for the ``deliveries``-th failed attempt.

    With the defaults, ten deliveries span about 2.5 minutes (1+2+4+8+16+4x30 s), so a
    database restart or a short outage is ridden out before anything reaches the dead letters.
    """
    return min(cap, base * 2 ** max(0, deliveries - 1)) * random.uniform(0.8, 1.2)


def dead_subject(consumer: str) -> str:
    return f"dead.{consumer}"


@dataclass
class PullConsumer:
    """A durable pull consumer driven by a short, explicit loop.

    Per message: handle → ``ack``; :class:`Poison` → ``term`` (logged, counted); any other
    error → ``nak`` with an exponential back-off (or :class:`Retry`'s delay). Cancellation
    leaves the message unacked so it is redelivered. While idle, fetches one message with a
    long poll so a new message is handled at once; after a hit, it drains the backlog in
    batches with a short poll (a batched long poll would hold a lone message until the poll
    expires).

    With ``dead_letters`` on, redelivery is bounded here, not by JetStream: past
    ``max_deliver`` deliveries a message gets ``on_exhausted``, then goes to the ``DEAD``
    stream (counted, logged) and is acked. JetStream's own ``max_deliver`` stays unbounded, so
    a message whose dead-lettering failed (NATS trouble) is still redelivered instead of
    silently dropped. With ``replay_after`` set, the consumer replays its own dead letters
    that old, up to ``max_replays`` times each. Off (a daemon's tasks, which the scheduler
    re-derives from its database), JetStream stops delivering after ``max_deliver``.
    ``max_deliver=None``: unbounded (the replayer itself).
    """

    js: JetStreamContext
    stream: str
    durable: str
    subject: str
    handler: Handler
    batch: int = 32
    idle_poll: float = 5.0
    ack_wait: float = 30.0
    max_deliver: int | None = 10
    dead_letters: bool = False
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    on_exhausted: Exhausted | None = None
    replay_after: float | None = None
    max_replays: int = 5
    ready: ReadyChecks | None = None  # the app's ready checks: a failing fetch loop shows there
    # Optional: a fetched batch of first deliveries applied at once, then acked (after the
    # handler returned, i.e. after its commit). Redeliveries always go one at a time.
    batch_handler: BatchHandler | None = None

    async def run(self, stop: asyncio.Event) -> None:
        if self.replay_after is None:
            await self._loop(stop)
            return
        replayer = PullConsumer(
            self.js,
            "DEAD",
            f"{self.durable}-replay",
            dead_subject(self.durable),
            DeadLetterReplayer(self.js, self.durable, self.replay_after, self.max_replays),
            idle_poll=self.idle_poll,
            max_deliver=None,
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._loop(stop))
            tg.create_task(replayer.run(stop))

    async def _loop(self, stop: asyncio.Event) -> None:
        config = ConsumerConfig(
            # The name too, so nats-py creates it on CONSUMER.CREATE.<stream>.<name>.<filter>:
            # a daemon's NATS user may create only its own consumer with its own filter.
            name=self.durable,
            durable_name=self.durable,
            ack_wait=self.ack_wait,
            # With dead letters the bound is applied in _failed, where giving up means DEAD.
            max_deliver=-1 if self.dead_letters or self.max_deliver is None else self.max_deliver,
            filter_subject=self.subject,
        )
        # Creating the consumer is retried like a fetch: a cluster under load may time out
        # the request, and a consumer that gave up here would leave the process up but deaf.
        try:
            sub = await retry(
                f"consumer.{self.durable}.create",
                lambda: self.js.pull_subscribe(
                    self.subject, durable=self.durable, stream=self.stream, config=config
                ),
                stop=stop,
                backoff=Backoff(base=0.5, cap=10.0),
                unhealthy_after=3,
                ready=self.ready,
                give_up=lambda exc: not _jetstream_settling(exc),
            )
        except Stopped:
            return
        busy = False

        async def fetch() -> float:
            nonlocal busy
            try:
                if busy:
                    msgs = await sub.fetch(self.batch, timeout=0.05)
                else:
                    msgs = await sub.fetch(1, timeout=self.idle_poll)
            except (NatsTimeoutError, FetchTimeoutError, TimeoutError):
                busy = False
                return 0.0
            busy = bool(msgs)
            if self.batch_handler is not None and len(msgs) > 1:
                msgs = await self._handle_batch(msgs)
            for msg in msgs:
                await self._handle(msg)
            return 0.0

        try:  # connection trouble backs off with jitter (FETCH_BACKOFF), loudly after 3 in a row
            await every(
                f"consumer.{self.durable}",
                fetch,
                0.0,
                stop=stop,
                backoff=FETCH_BACKOFF,
                ready=self.ready,
            )
        finally:
            with contextlib.suppress(Exception):  # best effort on shutdown
                await sub.unsubscribe()

    async def _handle_batch(self, msgs: list[Msg]) -> list[Msg]:
        """Apply first deliveries in one call and ack them; return what is left to handle
        one at a time (redeliveries, or the whole batch when the batch call failed)."""
        assert self.batch_handler is not None
        first: list[Msg] = []
        rest: list[Msg] = []
        for m in msgs:  # (``metadata`` parses the reply subject on every access)
            (first if m.metadata.num_delivered <= 1 else rest).append(m)
        if len(first) < 2:
            return msgs
        try:
            await self.batch_handler(first)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("consumer.batch_fallback", consumer=self.durable, error=str(exc)[:200])
            return msgs
        for msg in first:
            messages_handled.labels(self.durable, "ack").inc()
            await msg.ack()
        return rest

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
                await self._failed(msg, exc)
            else:
                messages_handled.labels(self.durable, "ack").inc()
                await msg.ack()

    async def _failed(self, msg: Msg, exc: Exception) -> None:
        delivered = msg.metadata.num_delivered
        reason = str(exc) or type(exc).__name__
        exhausted = (
            self.dead_letters and self.max_deliver is not None and delivered >= self.max_deliver
        )
        if exhausted and await self._give_up(msg, exc, reason):
            return
        delay = (
            exc.delay
            if isinstance(exc, Retry)
            else backoff(delivered, self.backoff_base, self.backoff_cap)
        )
        log.warning(
            "consumer.retry",
            consumer=self.durable,
            error=reason,
            delivered=delivered,
            delay=round(delay, 2),
        )
        messages_handled.labels(self.durable, "nak").inc()
        await msg.nak(delay=delay)

    async def _give_up(self, msg: Msg, exc: Exception, reason: str) -> bool:
        """Settle the message (``on_exhausted``) or move it to the dead letters; False if
        neither worked, so the caller naks it and it comes back."""
        if self.on_exhausted is not None:
            try:
                settled = await self.on_exhausted(msg, exc)
            except Exception as last:
                log.warning("consumer.exhausted_failed", consumer=self.durable, error=str(last))
                settled = False
            if settled:
                messages_handled.labels(self.durable, "settled").inc()
                await msg.ack()
                return True
        extra = {
            DEAD_SUBJECT: msg.subject,
            DEAD_REASON: reason[:512],
            DEAD_DELIVERIES: str(msg.metadata.num_delivered),
        }
        kept = {k: v for k, v in (msg.headers or {}).items() if k != "Nats-Msg-Id"}
        try:
            await self.js.publish(
                dead_subject(self.durable), msg.data, timeout=5, headers={**kept, **extra}
            )
        except Exception as pub:
            log.error("consumer.dead_letter_failed", consumer=self.durable, error=str(pub))
            return False
        log.error(
            "consumer.dead_lettered",
            consumer=self.durable,
            subject=msg.subject,
            reason=reason,
            delivered=msg.metadata.num_delivered,
        )
        dead_letters.labels(self.durable, "stored").inc()
        messages_handled.labels(self.durable, "dead").inc()
        await msg.ack()
        return True


class DeadLetterReplayer:
    """Handler that puts a consumer's dead letters back on their original subject once they
    are ``after`` seconds old (the outage that killed them has likely passed), at most
    ``max_replays`` times each; past that a letter stays in ``DEAD`` (logged, counted) for an
    operator to replay with :func:`replay_dead_letters`."""

    def __init__(self, js: JetStreamContext, consumer: str, after: float, max_replays: int) -> None:
        self.js = js
        self.consumer = consumer
        self.after = after
        self.max_replays = max_replays

    async def __call__(self, msg: Msg) -> None:
        age = time.time() - msg.metadata.timestamp.timestamp()
        if age < self.after:
            raise Retry("dead letter too young to replay", delay=self.after - age)
        replays = int((msg.headers or {}).get(REPLAYS, "0") or 0)
        if replays >= self.max_replays:
            log.error(
                "dead_letter.kept",
                consumer=self.consumer,
                subject=(msg.headers or {}).get(DEAD_SUBJECT),
                replays=replays,
            )
            dead_letters.labels(self.consumer, "kept").inc()
            return
        await _republish(self.js, msg, replays)
        dead_letters.labels(self.consumer, "replayed").inc()


async def _republish(js: JetStreamContext, msg: Msg, replays: int) -> None:
    headers = dict(msg.headers or {})
    subject = headers.pop(DEAD_SUBJECT, None)
    if not subject:
        raise Poison("a dead letter without its original subject")
    reason = headers.pop(DEAD_REASON, "")
    headers.pop(DEAD_DELIVERIES, None)
    headers.pop("Nats-Msg-Id", None)  # the stream's duplicate window must not swallow it
    headers[REPLAYS] = str(replays + 1)
    await js.publish(subject, msg.data, timeout=5, headers=headers)
    # Replayed letters leave DEAD (a LIMITS stream, so an ack alone would keep them there and
    # an operator's replay would send them again); kept ones stay until replayed by hand.
    with contextlib.suppress(NotFoundError):
        await js.delete_msg("DEAD", msg.metadata.sequence.stream)
    log.warning("dead_letter.replayed", subject=subject, replays=replays + 1, reason=reason)


async def replay_dead_letters(js: JetStreamContext, consumer: str, limit: int = 10_000) -> int:
    """Replay every dead letter of ``consumer`` now, whatever its age or replay count (the
    operator's tool once the cause is fixed). Returns how many were replayed."""
    sub = await js.pull_subscribe(dead_subject(consumer), stream="DEAD")
    done = 0
    try:
        while done < limit:
            try:
                msgs = await sub.fetch(min(100, limit - done), timeout=1)
            except (NatsTimeoutError, FetchTimeoutError, TimeoutError):
                break
            for msg in msgs:
                await _republish(js, msg, int((msg.headers or {}).get(REPLAYS, "0") or 0))
                await msg.ack()
                dead_letters.labels(consumer, "replayed").inc()
                done += 1
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return done


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
