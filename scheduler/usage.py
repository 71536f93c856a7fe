"""Usage metering: one record per job that ends on a provider, and the usage queries.

Price model: a provider's ``price_per_hour`` is per GPU-hour (per hour for a CPU-only task),
fixed on the job when it is placed, so a later price change never rewrites a running bill.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from scheduler.models import Job, UsageRecord
from scheduler.schemas import UsageByGpu, UsageTotals

MICRO = Decimal("0.000001")


def usage_fields(job: Job, ended_at: datetime) -> list[dict[str, Any]]:
    """The usage of the job's current attempt, ending now, as usage records' attributes (no
    ORM objects: a status batch writes them as rows; issue 12): one per host it ran on, so a
    gang's ranks each count on their own provider, with their GPUs at their host's price.
    Empty if it never reached a host."""
    hosts = job.hosts
    if not hosts:
        return []
    started = job.started_at or ended_at  # never reported running: nothing ran, nothing billed
    seconds = max(0.0, (ended_at - started).total_seconds())
    rows = []
    for provider_id, gpu_count, price in hosts:
        price = price or 0.0
        # Decimal, not float: seconds x units x price / 3600 rounded once, to a micro-unit.
        cost = Decimal(repr(seconds)) * max(gpu_count, 1) * Decimal(repr(price)) / 3600
        rows.append(
            {
                "job_id": job.id,
                "attempt": job.attempt,
                "owner_id": job.owner_id,
                "provider_id": provider_id,
                "state": job.state,
                "gpu_name": job.gpu_name,
                "gpu_count": gpu_count,
                "started_at": started,
                "ended_at": ended_at,
                "seconds": seconds,
                "gpu_seconds": seconds * gpu_count,
                "price_per_hour": price,
                "cost": float(cost.quantize(MICRO)),
            }
        )
    return rows


def meter(job: Job, ended_at: datetime) -> list[UsageRecord]:
    """The usage of the job's current attempt, ending now: a record per host it ran on."""
    return [UsageRecord(**fields) for fields in usage_fields(job, ended_at)]


def _exact_sum(column: Any, scale: int) -> Any:
    """SUM in integers: each stored value (cost to the micro-unit, seconds to the millisecond)
    becomes an exact integer before adding, so totals never drift the way a float sum does
    (issue 18) and both dialects agree to the last unit."""
    scaled = sa.cast(sa.func.round(column * scale), sa.BigInteger)
    return sa.func.coalesce(sa.func.sum(scaled), 0)


class UsageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, record: UsageRecord) -> None:
        self.session.add(record)

    async def summary(
        self,
        *,
        owner_id: str | None = None,
        provider_ids: list[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> tuple[UsageTotals, list[UsageByGpu]]:
        """Totals, and a breakdown by placed GPU model, over the records that match."""
        where = []
        if owner_id is not None:
            where.append(UsageRecord.owner_id == owner_id)
        if provider_ids is not None:
            where.append(UsageRecord.provider_id.in_(provider_ids))
        if since is not None:
            where.append(UsageRecord.ended_at >= since)
        if until is not None:
            where.append(UsageRecord.ended_at < until)
        # an attempt counts once, however many hosts (a gang's ranks) it has records on
        attempt = UsageRecord.job_id + "/" + sa.cast(UsageRecord.attempt, sa.String)
        cols = (
            sa.func.count(sa.distinct(attempt)),
            _exact_sum(UsageRecord.seconds, 1000),
            _exact_sum(UsageRecord.gpu_seconds, 1000),
            _exact_sum(UsageRecord.cost, 1_000_000),
        )
        total = (await self.session.execute(sa.select(*cols).where(*where))).one()
        rows = (
            await self.session.execute(
                sa.select(UsageRecord.gpu_name, *cols)
                .where(*where)
                .group_by(UsageRecord.gpu_name)
                .order_by(UsageRecord.gpu_name)
            )
        ).all()

        def totals(r: Any) -> UsageTotals:
            # summed exactly as integers (milliseconds, micro-units), shown as decimals
            return UsageTotals(
                jobs=int(r[0]),
                seconds=float(Decimal(int(r[1])) / 1000),
                gpu_seconds=float(Decimal(int(r[2])) / 1000),
                cost=float(Decimal(int(r[3])) / 1_000_000),
                cost_micros=int(r[3]),
            )

        by_gpu = [UsageByGpu(gpu_name=r[0], **totals(r[1:]).model_dump()) for r in rows]
        return totals(total), by_gpu

    async def records(
        self, *, owner_id: str | None, provider_ids: list[str] | None, limit: int
    ) -> list[UsageRecord]:
        stmt = sa.select(UsageRecord).order_by(UsageRecord.ended_at.desc()).limit(limit)
        if owner_id is not None:
            stmt = stmt.where(UsageRecord.owner_id == owner_id)
        if provider_ids is not None:
            stmt = stmt.where(UsageRecord.provider_id.in_(provider_ids))
        return list((await self.session.execute(stmt)).scalars())
