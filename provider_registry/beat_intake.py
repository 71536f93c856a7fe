"""Heartbeats over NATS (issue 12): daemons send each beat as a core NATS request on
``providers.heartbeat.<provider_id>``; registry replicas share them through a queue group, store
whatever arrived while the last batch was written in one transaction (provider_registry/beats.py)
and answer each beat after the commit.

Request/reply, not a JetStream stream: a beat is worth something only while it is fresh, and
each one lists everything its daemon holds, so a beat that cannot be stored now is of no use
later. While no registry runs, the daemon hears "no responders" at once and its beat fails as an
HTTP beat would (its LeaseBackoff retries inside the TTL, the registry's sweep grace covers the
rest); a stream would instead keep beats to apply after the outage with the wrong time, and a
stale attempts list could make the scheduler requeue work started since. The answer also says
"register again" to a daemon the registry forgot, as HTTP's 404 does.

Who beats is read from the subject alone: a daemon's NATS user may publish only on its own
(``shared.nats_auth.daemon_permissions``), so a beat never refreshes another provider.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from provider_registry.beats import Announcer, BeatResult, absorb
from provider_registry.schemas import HeartbeatIn
from shared.contracts import (
    ANY,
    HEARTBEAT_NOT_REGISTERED,
    HEARTBEAT_OK,
    HEARTBEAT_WAIT_SECONDS,
    heartbeat_subject,
)
from shared.db import unit_of_work
from shared.loops import Backoff, ReadyChecks, every

log = structlog.get_logger(__name__)

QUEUE_GROUP = "registry"
MAX_BATCH = 1000  # beats per transaction: ~1,000 rows touched keeps a batch well under a second
# Idle: woken by the next beat (else a look every second). A failing database is tried again
# within a daemon's wait, so beats are stored again as soon as it is back.
RETRY = Backoff(base=0.5, cap=HEARTBEAT_WAIT_SECONDS, jitter=0.5, floor=1.0)
MAX_WAITING = 50_000  # beats held while the database is slow; past it new ones are not answered

beats_received = Counter(
    "dante_registry_nats_heartbeats_total",
    "Heartbeats received over NATS, by outcome (stored, not_registered, invalid, failed, "
    "expired: waited past the daemon's wait, dropped: too many waiting).",
    ["outcome"],
)

ANSWERS = {
    BeatResult.STORED: HEARTBEAT_OK.encode(),
    BeatResult.NOT_REGISTERED: HEARTBEAT_NOT_REGISTERED.encode(),
}
UNAVAILABLE = b"unavailable"
INVALID = b"invalid"


@dataclass
class _Beat:
    provider_id: str
    body: HeartbeatIn
    reply: str
    at: float  # monotonic, when received


@dataclass
class BeatIntake:
    nc: NATS
    sessions: async_sessionmaker[AsyncSession]
    announcer: Announcer
    outbox_wake: asyncio.Event
    waiting: list[_Beat] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    failing: bool = False  # the last batch failed: arrivals do not cut the back-off short

    async def run(self, stop: asyncio.Event, ready: ReadyChecks | None = None) -> None:
        """Take beats until ``stop``; a failing database backs off like every loop (``/ready``
        names ``loop.nats_heartbeats`` after three failures in a row)."""
        sub: Subscription = await self.nc.subscribe(
            heartbeat_subject(ANY), queue=QUEUE_GROUP, cb=self._received
        )
        try:
            await every(
                "nats_heartbeats",
                self._store_waiting,
                1.0,
                stop=stop,
                wake=self.wake,
                ready=ready,
                backoff=RETRY,
            )
        finally:
            await sub.unsubscribe()

    async def _received(self, msg: Msg) -> None:
        """Parse and queue one beat (cheap: the callback runs once per message, in order)."""
        provider_id = msg.subject.rpartition(".")[2]
        if not msg.reply:
            return  # a plain publish cannot be answered: only requests are beats
        try:
            body = HeartbeatIn.model_validate_json(msg.data)
        except ValidationError as exc:
            beats_received.labels("invalid").inc()
            log.warning("heartbeat.invalid", provider_id=provider_id, error=str(exc)[:200])
            await self.nc.publish(msg.reply, INVALID)
            return
        if len(self.waiting) >= MAX_WAITING:
            beats_received.labels("dropped").inc()
            return
        self.waiting.append(_Beat(provider_id, body, msg.reply, time.monotonic()))
        if not self.failing:
            self.wake.set()

    async def _store_waiting(self) -> float | None:
        """Store up to :data:`MAX_BATCH` waiting beats in one transaction, then answer them.
        Returns 0 (go again at once) while more wait."""
        self._expire()
        batch, self.waiting = self.waiting[:MAX_BATCH], self.waiting[MAX_BATCH:]
        if not batch:
            return None
        try:
            async with unit_of_work(self.sessions) as uow:
                done = await absorb(
                    uow.session, [(b.provider_id, b.body) for b in batch], self.announcer
                )
        except Exception:
            self.failing = True
            beats_received.labels("failed").inc(len(batch))
            for b in batch:
                await self.nc.publish(b.reply, UNAVAILABLE)
            raise
        self.failing = False
        if done.events:
            self.outbox_wake.set()
        for b, result in zip(batch, done.results, strict=True):
            beats_received.labels(result.value).inc()
            await self.nc.publish(b.reply, ANSWERS[result])
        return 0.0 if self.waiting else None

    def _expire(self) -> None:
        """Drop beats that waited longer than their daemon does for an answer."""
        oldest = time.monotonic() - HEARTBEAT_WAIT_SECONDS
        fresh = [b for b in self.waiting if b.at >= oldest]
        if len(fresh) < len(self.waiting):
            beats_received.labels("expired").inc(len(self.waiting) - len(fresh))
            self.waiting = fresh
