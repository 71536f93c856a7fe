from __future__ import annotations

from datetime import datetime

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
    ) -> tuple[list[Provider], int]:
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
        total = (
            await self.session.execute(sa.select(sa.func.count()).select_from(stmt.subquery()))
        ).scalar_one()
        rows = await self.session.execute(
            stmt.order_by(Provider.registered_at, Provider.id).limit(limit).offset(offset)
        )
        return list(rows.scalars()), total

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
