"""Provider events, published from an outbox in the registry's database.

A request (register, heartbeat, status) or the sweep writes its event to
``provider_event_outbox`` in the transaction that made it true and answers at once; this loop
publishes the rows in order and deletes them. NATS away: the rows wait and the requests still
answer. The registry killed between commit and publish: the next start sends them. Each row
keeps one ``Nats-Msg-Id``, so a row published twice (a crash after the publish, before the
delete) is dropped by the stream's duplicate window.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
import structlog
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from provider_registry.models import ProviderEventOutbox
from shared.contracts import ProviderEvent
from shared.db import unit_of_work
from shared.loops import ReadyChecks, every
from shared.nats import publish

log = structlog.get_logger(__name__)


async def publish_outbox(
    sessions: async_sessionmaker[AsyncSession], js: JetStreamContext, batch: int = 100
) -> int:
    """Publish the oldest waiting events and delete them; rows are claimed SKIP LOCKED, so
    registry replicas share the work. Returns how many were sent."""
    async with unit_of_work(sessions) as uow:
        stmt = (
            sa.select(ProviderEventOutbox)
            .order_by(ProviderEventOutbox.id)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
        rows = list((await uow.session.execute(stmt)).scalars())
        for row in rows:
            event = ProviderEvent.model_validate(row.payload)
            await publish(js, row.subject, event, msg_id=row.msg_id)
            await uow.session.delete(row)
    return len(rows)


async def outbox_loop(
    sessions: async_sessionmaker[AsyncSession],
    js: JetStreamContext,
    stop: asyncio.Event,
    wake: asyncio.Event,
    interval: float = 1.0,
    ready: ReadyChecks | None = None,
) -> None:
    """Publish until ``stop``: at once when a commit sets ``wake``, else every ``interval``;
    a full batch means more may wait (go again at once); failures back off, loudly after
    three in a row (``/ready`` names ``loop.event_outbox``)."""

    async def send() -> float | None:
        return 0.0 if await publish_outbox(sessions, js) >= 100 else None

    await every("event_outbox", send, interval, stop=stop, wake=wake, ready=ready)
