"""Storage byte-hours: billing samples the real storage service (in-process, local disk) through
its API with a service token, and charges each user for what they held between samples."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from billing_service import invoices
from billing_service.main import MIGRATIONS
from billing_service.settings import BillingSettings
from billing_service.storage_metering import StorageSampler
from shared.db import run_migrations
from storage_service.main import create_app as storage_app
from storage_service.settings import StorageSettings
from tests.support.billing import Books

# 1,000,000.00 per GB-hour: 1,000 bytes held for an hour cost exactly 1.00 (100 minor units)
PRICE = 10**12


async def test_byte_hours_are_charged_per_user_between_samples(
    db_url: str, tmp_path: Path, local_jwks: Callable[[], Any], mint_token: Callable[..., str]
) -> None:
    await run_migrations(MIGRATIONS, db_url, "alembic_version_billing")
    settings = BillingSettings(storage_price_micros_per_gb_hour=PRICE)
    books = Books(db_url, settings)
    rich, broke = str(uuid.uuid4()), str(uuid.uuid4())
    storage = storage_app(
        StorageSettings(backend="local", root_dir=tmp_path / "objects", startup_wait_seconds=0),
        jwks=local_jwks,
    )
    service_token = mint_token("service", "service:billing")

    async def headers() -> dict[str, str]:
        return {"authorization": f"Bearer {service_token}"}

    async def base() -> str:
        return "http://storage"

    try:
        async with books.service() as svc:
            await svc.grant(rich, 10_000, ref="seed")
        async with storage.router.lifespan_context(storage):
            transport = httpx.ASGITransport(app=storage)
            async with httpx.AsyncClient(transport=transport) as http:
                for user, key, size in (
                    (rich, "a.bin", 600),
                    (rich, "d/b.bin", 400),
                    (broke, "c", 500),
                ):
                    r = await http.put(
                        f"http://storage/api/v1/storage/objects/{key}",
                        content=b"x" * size,
                        headers={"authorization": f"Bearer {mint_token('requester', user)}"},
                    )
                    assert r.status_code == 201, r.text
                # a requester's token cannot list everyone's objects: billing's can
                sampler = StorageSampler(books.sessions, settings, http, base, headers)
                assert await sampler.usage_by_owner() == {rich: 1000, broke: 500}
                t0 = datetime(2026, 11, 10, tzinfo=UTC)
                assert await sampler.sample(t0) == 0  # first sample: nothing held before it
                assert await sampler.sample(t0 + timedelta(hours=1)) == 1
                r = await http.delete(
                    "http://storage/api/v1/storage/objects/a.bin",
                    headers={"authorization": f"Bearer {mint_token('requester', rich)}"},
                )
                assert r.status_code == 204
                await sampler.sample(t0 + timedelta(hours=2))
                await sampler.sample(t0 + timedelta(hours=3))
        # 1,000 B for the first hour and the second (deleted after the 1 h sample, seen at 2 h),
        # then 400 B for the third: 100 + 100 + 40
        assert await books.balance(f"wallet:{rich}") == 10_000 - 240
        assert await books.balance("platform:storage") == 240
        # the user without credit is charged nothing (and not driven below zero)
        assert await books.balance(f"wallet:{broke}") == 0
        async with books.service() as svc:
            inv = await invoices.invoice(svc.settlements, settings, rich, "2026-11")
            assert [x["amount_minor"] for x in inv["lines"]] == [100, 100, 40]
            assert inv["total_minor"] == 240
            assert (await svc.reconcile())["ok"]
    finally:
        await books.close()
