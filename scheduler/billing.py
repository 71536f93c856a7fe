"""The scheduler's side of billing: holds before dispatch, and a usage outbox.

Holds: before an attempt is dispatched, the scheduler asks the billing service (its service
token, ``POST /internal/holds``) to set aside price x GPUs x min(timeout, cap). A 402 leaves the
job queued with the reason "insufficient balance: ..."; billing unreachable leaves it queued
with "waiting: billing unavailable" — a billing outage delays jobs, it never loses or fails
them, and never runs work nobody can pay for. The hold is keyed by (job, attempt), so asking
again after a rolled-back round returns the same hold.

Usage: every attempt that ends (a requeue, or the job's terminal state) writes one
``usage_outbox`` row in the same transaction as the state change; a loop publishes unpublished
rows to ``usage.recorded.<job_id>`` and marks them. A crash between the commit and the publish
loses nothing (the row is still unpublished); a crash between publish and mark publishes twice,
which JetStream's duplicate window and billing's (job, attempt) key both absorb.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, cast

import httpx
import sqlalchemy as sa
import structlog
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from scheduler.models import Job, ProviderView, UsageOutbox
from shared.contracts import UsageRecorded, UsageShare
from shared.db import unit_of_work, utcnow
from shared.errors import DanteError
from shared.loops import every
from shared.nats import headers

if TYPE_CHECKING:
    from scheduler.repository import JobRepository
    from shared.service_auth import ServiceTokenSource

log = structlog.get_logger(__name__)
USAGE_OUTBOX = cast(sa.Table, UsageOutbox.__table__)
PUBLISH_WINDOW = 256
"""Outbox publishes awaiting their acks at once."""


def price_micros(price_per_hour: float | None) -> int:
    """The placement price (a decimal per GPU-hour) as integer millionths, half up; the one
    place a float price becomes money."""
    if not price_per_hour:
        return 0
    value = Decimal(str(price_per_hour)) * 1_000_000
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def shares_of(job: Job, owners: dict[str, str | None]) -> list[UsageShare]:
    """A placed gang's ranks as billing shares: each its GPUs at its host's price."""
    if not job.provider_id or not job.gang:  # (a queued job's gang is not even read)
        return []
    return [
        UsageShare(
            provider_id=host.provider_id,
            provider_owner_id=owners.get(host.provider_id),
            units=max(host.gpu_count, 1),
            price_micros_per_hour=price_micros(host.price_per_hour),
        )
        for host in job.hosts
    ]


def usage_of(
    job: Job,
    ended_at: datetime,
    *,
    final: bool,
    provider_owner_id: str | None,
    shares: list[UsageShare] | None = None,
) -> UsageRecorded:
    started = job.started_at if job.provider_id else None
    run = (ended_at - started) if started else None
    # timedelta is exact in microseconds: this is ended_at - started_at to the microsecond
    run_us = max(0, (run.days * 86_400 + run.seconds) * 1_000_000 + run.microseconds) if run else 0
    return UsageRecorded(
        job_id=job.id,
        attempt=job.attempt,
        owner_id=job.owner_id,
        provider_id=job.provider_id,
        provider_owner_id=provider_owner_id,
        state=str(job.state),
        final=final,
        started_at=started,
        ended_at=ended_at,
        run_microseconds=run_us,
        units=sum(x.units for x in shares) if shares else max(job.gpu_count, 1),
        gpu_model=job.gpu_name,
        price_micros_per_hour=price_micros(job.price_per_hour) if job.provider_id else 0,
        shares=shares or [],
    )


async def record_usage(
    session: AsyncSession,
    job: Job,
    ended_at: datetime,
    *,
    final: bool,
    rows: JobRepository | None = None,
) -> None:
    """Write the attempt's usage to the outbox (same transaction as the state change).
    ``rows``: the unit of work's job repository, which writes the row in bulk while it
    collects (a placement round, a status batch) instead of an ORM object flushed alone."""
    placed = bool(job.provider_id)  # a queued job is read without its gang: never touch it
    hosts = ([r["provider_id"] for r in job.gang or []] if placed else []) or [job.provider_id]
    owners: dict[str, str | None] = {}
    for provider_id in hosts:
        if provider_id:
            view = await session.get(ProviderView, provider_id)
            owners[provider_id] = view.owner_id if view else None
    event = usage_of(
        job,
        ended_at,
        final=final,
        provider_owner_id=owners.get(job.provider_id or ""),
        shares=shares_of(job, owners),
    )
    row = {
        "job_id": job.id,
        "attempt": job.attempt,
        "payload": event.model_dump(mode="json"),
        "created_at": utcnow(),
    }
    if rows is None or not rows.collect_row(USAGE_OUTBOX, row):
        session.add(UsageOutbox(**row))


OUTBOX_BATCH = 500
"""Outbox rows claimed (and marked published) per transaction."""


async def publish_outbox(
    sessions: async_sessionmaker[AsyncSession], js: JetStreamContext, batch: int = OUTBOX_BATCH
) -> int:
    """Publish what is unpublished, oldest first; rows are claimed SKIP LOCKED (replicas).

    The claimed rows are published pipelined (a window of acks in flight, in id order on
    the one connection) and marked with one UPDATE; any publish failing rolls the claim
    back, so those rows are sent again (JetStream's duplicate window and billing's
    (job, attempt) key absorb what was sent twice). Plain rows, not ORM objects (issue 12)."""
    async with unit_of_work(sessions) as uow:
        stmt = (
            sa.select(
                USAGE_OUTBOX.c.id,
                USAGE_OUTBOX.c.job_id,
                USAGE_OUTBOX.c.attempt,
                # as stored (JSON text): published as it is, not decoded, validated and
                # encoded again; it was written by ``record_usage`` from the contract model
                sa.cast(USAGE_OUTBOX.c.payload, sa.Text).label("payload"),
            )
            .where(USAGE_OUTBOX.c.published_at.is_(None))
            .order_by(USAGE_OUTBOX.c.id)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
        rows = (await uow.session.execute(stmt)).all()
        if not rows:
            return 0

        async def send(job_id: str, attempt: int, payload: str) -> None:
            await js.publish(
                f"usage.recorded.{job_id}",
                payload.encode(),
                timeout=5.0,
                headers=headers(None, f"{job_id}:{attempt}:usage"),
            )

        for start in range(0, len(rows), PUBLISH_WINDOW):
            window = rows[start : start + PUBLISH_WINDOW]
            await asyncio.gather(*(send(r.job_id, r.attempt, r.payload) for r in window))
        await uow.session.execute(
            sa.update(USAGE_OUTBOX)
            .where(USAGE_OUTBOX.c.id.in_([r.id for r in rows]))
            .values(published_at=utcnow())
        )
    return len(rows)


async def outbox_loop(
    sessions: async_sessionmaker[AsyncSession],
    js: JetStreamContext,
    stop: asyncio.Event,
    interval: float = 0.5,
) -> None:
    """Publish the outbox until ``stop``; NATS or the database away: the rows wait (backed off,
    loudly after repeated failures); a full batch sent means more may wait: go again at once."""

    async def send() -> float | None:
        return 0.0 if await publish_outbox(sessions, js) else None

    await every("usage_outbox", send, interval, stop=stop)


# --- holds ------------------------------------------------------------------------------------


class InsufficientFunds(Exception):
    """Billing refused the hold: the owner's wallet cannot cover it."""


class BillingUnavailable(Exception):
    """Billing could not answer (down, auth not ready): the job waits."""


class HttpBilling:
    def __init__(
        self,
        base_url: Callable[[], Awaitable[str]],
        http: httpx.AsyncClient,
        tokens: ServiceTokenSource,
    ) -> None:
        self.base_url = base_url
        self.http = http
        self.tokens = tokens

    async def hold(self, job: Job, price_per_hour: float | None, units: int | None = None) -> int:
        """Hold funds for the job's current attempt; returns the amount (minor units)."""
        body = {
            "job_id": job.id,
            "attempt": job.attempt,
            "owner_id": job.owner_id,
            "price_micros_per_hour": price_micros(price_per_hour),
            "units": units or max(job.gpu_count, 1),
            "timeout_seconds": job.timeout_seconds,
        }
        try:
            url = f"{await self.base_url()}/internal/holds"
            resp = await self.http.post(
                url, json=body, headers=await self.tokens.headers(), timeout=5
            )
        except (httpx.HTTPError, DanteError, IndexError) as exc:
            raise BillingUnavailable(type(exc).__name__) from exc
        if resp.status_code == 401:
            self.tokens.invalidate()
        if resp.status_code == 402:
            raise InsufficientFunds(resp.json().get("detail", "insufficient balance"))
        if resp.status_code not in (200, 201):
            raise BillingUnavailable(f"billing answered {resp.status_code}")
        return int(resp.json()["amount_minor"])
