"""A real billing process, and reading its books straight from its database."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from billing_service.models import Hold, Settlement
from billing_service.service import BillingService
from billing_service.settings import BillingSettings
from shared.db import make_engine, unit_of_work
from tests.support.processes import service_process, wait_process_ready


def billing_process(
    db_url: str, nats_url: str, log_path: Path, **settings: str
) -> contextlib.AbstractContextManager[tuple[subprocess.Popen[bytes], int]]:
    """``python -m billing_service serve`` as a real process on a free port."""
    return service_process(
        "billing_service", "DANTE_BILLING_", db_url, nats_url, log_path, **settings
    )


async def wait_ready(proc: subprocess.Popen[bytes], port: int, limit: float = 60) -> None:
    await wait_process_ready(proc, port, "billing", limit)


class Books:
    """The billing database, read (and seeded) from the test."""

    def __init__(self, db_url: str, settings: BillingSettings | None = None) -> None:
        self.engine = make_engine(db_url)
        from sqlalchemy.ext.asyncio import async_sessionmaker

        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.settings = settings or BillingSettings()

    async def close(self) -> None:
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def service(self) -> Any:
        async with unit_of_work(self.sessions) as uow:
            yield BillingService(uow, self.settings)

    async def settlements(self) -> list[Settlement]:
        async with self.sessions() as s:
            return list((await s.execute(sa.select(Settlement))).scalars())

    async def count(self) -> int:
        async with self.sessions() as s:
            return int((await s.execute(sa.select(sa.func.count(Settlement.id)))).scalar_one())

    async def open_holds(self) -> list[Hold]:
        async with self.sessions() as s:
            stmt = sa.select(Hold).where(Hold.status == "open")
            return list((await s.execute(stmt)).scalars())

    async def balance(self, account_id: str) -> int:
        async with self.sessions() as s:
            got = await s.execute(
                sa.text("SELECT balance_minor FROM accounts WHERE id = :a"), {"a": account_id}
            )
            row = got.first()
            return int(row[0]) if row else 0
