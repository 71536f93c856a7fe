from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from provider_registry.models import Gpu, Provider


class ProviderRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, provider_id: str, *, for_update: bool = False) -> Provider | None:
        stmt = sa.select(Provider).where(Provider.id == provider_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def add(self, provider: Provider) -> None:
        self.session.add(provider)
        await self.session.flush()

    async def delete(self, provider: Provider) -> None:
        await self.session.delete(provider)
        await self.session.flush()

    async def search(
        self,
        *,
        status: str | None = None,
        gpu_model: str | None = None,
        min_vram_mb: int | None = None,
        owner_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        after: tuple[datetime, str] | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page in (registered_at, id) order, read along an index (keyset: ``after`` is the
        last row of the previous page), and whether more match: ``limit + 1`` rows are read, no
        count over every match (issue 12). Rows, not ORM objects (a page of 50 hosts x 8 GPUs
        spent most of its time building and tracking objects only read once); the page's GPUs
        come in one IN query."""
        stmt = self._matching(status, gpu_model, min_vram_mb, owner_id)
        if after is not None:
            at, provider_id = after
            stmt = stmt.where(
                sa.or_(
                    Provider.registered_at > at,
                    sa.and_(Provider.registered_at == at, Provider.id > provider_id),
                )
            )
        stmt = stmt.order_by(Provider.registered_at, Provider.id).limit(limit + 1).offset(offset)
        stmt = stmt.with_only_columns(*Provider.__table__.columns)
        result = await self.session.execute(stmt)
        rows = [dict(r._mapping) for r in result]
        more = len(rows) > limit
        page = rows[:limit]
        by_id: dict[str, list[dict[str, Any]]] = {r["id"]: [] for r in page}
        if by_id:
            gpus = sa.select(*Gpu.__table__.columns).where(Gpu.provider_id.in_(list(by_id)))
            for g in await self.session.execute(gpus.order_by(Gpu.provider_id, Gpu.index)):
                by_id[g.provider_id].append(dict(g._mapping))
        for r in page:
            r["gpus"] = by_id[r["id"]]
        return page, more

    async def count(
        self,
        *,
        status: str | None = None,
        gpu_model: str | None = None,
        min_vram_mb: int | None = None,
        owner_id: str | None = None,
    ) -> int:
        """How many providers match: a cost in the number of matches (asked for explicitly;
        without a GPU filter it is a count along an index)."""
        stmt = self._matching(status, gpu_model, min_vram_mb, owner_id)
        total = sa.select(sa.func.count()).select_from(
            stmt.with_only_columns(Provider.id).subquery()
        )
        return int((await self.session.execute(total)).scalar_one())

    @staticmethod
    def _matching(
        status: str | None, gpu_model: str | None, min_vram_mb: int | None, owner_id: str | None
    ) -> sa.Select[Provider]:
        stmt = sa.select(Provider)
        if status:
            stmt = stmt.where(Provider.status == status)
        if owner_id:
            stmt = stmt.where(Provider.owner_id == owner_id)
        if gpu_model or min_vram_mb:
            gpu = sa.select(Gpu.provider_id).where(Gpu.provider_id == Provider.id)
            if gpu_model:
                # Glob as in job specs (H100*), case-insensitive.
                pattern = gpu_model.replace("%", r"\%").replace("_", r"\_").replace("*", "%")
                gpu = gpu.where(sa.func.lower(Gpu.name).like(pattern.lower(), escape="\\"))
            if min_vram_mb:
                gpu = gpu.where(Gpu.memory_total_mb >= min_vram_mb)
            stmt = stmt.where(sa.exists(gpu))
        return stmt

    async def stale_online(self, before: datetime, limit: int = 500) -> list[Provider]:
        """Online providers whose last heartbeat is older than ``before``, locked for update.

        SKIP LOCKED lets several registry replicas sweep at once without fighting.
        """
        stmt = (
            sa.select(Provider)
            .where(Provider.status == "online", Provider.last_heartbeat_at < before)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list((await self.session.execute(stmt)).scalars())
