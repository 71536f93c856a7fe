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
from typing import cast

import sqlalchemy as sa
import structlog
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from provider_registry.models import ProviderEventOutbox
from shared.db import unit_of_work
from shared.loops import ReadyChecks, every

log = structlog.get_logger(__name__)

BATCH = 500


async def publish_outbox(
    sessions: async_sessionmaker[AsyncSession], js: JetStreamContext, batch: int = BATCH
) -> int:
    """Publish the oldest waiting events and delete them; rows are claimed SKIP LOCKED, so
    registry replicas share the work. Returns how many were sent.

    The batch's publishes are pipelined (sent in order on the one connection, so the stream
    keeps their order; their acks awaited together) and the payloads go out as stored (they
    were dumped from a ``ProviderEvent``): awaiting each ack and re-validating each payload
    held the outbox to a few hundred events a second, below the rate of heartbeats (issue 12).
    A failed publish rolls the batch back; the stream drops what was already sent by its id.
    """
    t = cast(sa.Table, ProviderEventOutbox.__table__)
    async with unit_of_work(sessions) as uow:
        stmt = (
            # the payload as the text it was stored as: no decode and encode again per event
            sa.select(t.c.id, t.c.msg_id, t.c.subject, sa.cast(t.c.payload, sa.Text))
            .order_by(t.c.id)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
        rows = (await uow.session.execute(stmt)).all()
        if not rows:
            return 0
        await asyncio.gather(
            *(
                js.publish(
                    row.subject,
                    row[3].encode(),
                    timeout=5,
                    headers={"Nats-Msg-Id": row.msg_id},
                )
                for row in rows
            )
        )
        await uow.session.execute(sa.delete(t).where(t.c.id.in_([row.id for row in rows])))
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
        return 0.0 if await publish_outbox(sessions, js) >= BATCH else None

    await every("event_outbox", send, interval, stop=stop, wake=wake, ready=ready)
