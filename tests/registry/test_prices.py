"""Money values stay finite and sane (issue 18): non-finite or absurd prices are refused at the
API (the documented maximum, docs/scheduler.md), and usage totals add up exactly."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from api_gateway.main import create_app as create_gateway
from api_gateway.settings import GatewaySettings
from provider_registry.main import create_app
from provider_registry.settings import RegistrySettings
from shared.contracts import MAX_PRICE_PER_HOUR

MAX = MAX_PRICE_PER_HOUR


def test_the_one_maximum_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "scheduler.md").read_text()
    assert f"{int(MAX):,}" in doc


@pytest.fixture
async def registry(
    nats_url: str, tmp_path: Path, local_jwks: Callable[[], Any]
) -> AsyncIterator[httpx.AsyncClient]:
    settings = RegistrySettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/registry.sqlite", nats_url=nats_url
    )
    app = create_app(settings, jwks=local_jwks)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
            yield client


BAD = [b"Infinity", b"-Infinity", b"NaN", b"1e308", b"100000.01", b"-1"]


@pytest.mark.parametrize("price", BAD, ids=[b.decode() for b in BAD])
async def test_the_registry_refuses_non_finite_and_absurd_prices(
    registry: httpx.AsyncClient, mint_token: Callable[..., str], price: bytes
) -> None:
    pid = str(uuid.uuid4())
    headers = {
        "authorization": f"Bearer {mint_token('provider', provider_id=pid)}",
        "content-type": "application/json",
    }
    body = b'{"name": "h", "price_per_hour": ' + price + b"}"
    r = await registry.post("/api/v1/providers", content=body, headers=headers)
    assert r.status_code == 422 and r.json()["error"] == "validation_error", r.text
    assert (await registry.get(f"/api/v1/providers/{pid}", headers=headers)).status_code == 404
    # heartbeat metrics are no place for Infinity either
    ok = await registry.post(
        "/api/v1/providers", json={"name": "h", "price_per_hour": MAX}, headers=headers
    )
    assert ok.status_code == 201 and ok.json()["price_per_hour"] == MAX
    hb = b'{"gpus": [{"index": 0, "temperature_c": ' + price.replace(b"1e308", b"NaN") + b"}]}"
    if price in (b"Infinity", b"-Infinity", b"NaN", b"1e308"):
        r = await registry.post(f"/providers/{pid}/heartbeat", content=hb, headers=headers)
        assert r.status_code == 422


@pytest.fixture
async def gateway(nats_url: str, local_jwks: Callable[[], Any]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_gateway(GatewaySettings(nats_url=nats_url, port=1), jwks=local_jwks)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client


@pytest.mark.parametrize("field", ["max_price_per_hour", "max_price"])
async def test_the_gateway_refuses_a_non_finite_or_absurd_price_cap(
    gateway: httpx.AsyncClient, mint_token: Callable[..., str], nats_url: str, field: str
) -> None:
    headers = {
        "authorization": f"Bearer {mint_token('requester')}",
        "content-type": "application/json",
    }
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    before = (await js.stream_info("JOBS")).state.messages
    for price in BAD:
        body = (
            b'{"type": "script", "name": "x", "params": {"script_content": "echo"}, "'
            + field.encode()
            + b'": '
            + price
            + b"}"
        )
        r = await gateway.post("/api/v1/jobs", content=body, headers=headers)
        assert r.status_code == 422 and r.json()["error"] == "validation_error", (price, r.text)
    assert (await js.stream_info("JOBS")).state.messages == before
    await nc.close()


async def test_usage_totals_are_exact(tmp_path: Path) -> None:
    """A thousand 0.1-second records at a price whose float sum drifts add up exactly."""
    from scheduler.models import Job, SchedulerBase
    from scheduler.usage import UsageRepository, meter
    from shared.db import make_engine, utcnow

    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/usage.sqlite")
    async with engine.begin() as conn:
        await conn.run_sync(SchedulerBase.metadata.create_all)
    from sqlalchemy.ext.asyncio import async_sessionmaker

    sessions = async_sessionmaker(engine, expire_on_commit=False)
    end = utcnow()
    async with sessions() as session:
        repo = UsageRepository(session)
        for _ in range(1000):
            job = Job(
                id=str(uuid.uuid4()),
                type="script",
                name="x",
                spec={},
                owner_id="o",
                provider_id="p",
                state="completed",
                attempt=1,
                gpu_count=1,
                gpu_name="H100",
                price_per_hour=0.36,
                started_at=end - timedelta(seconds=0.1),
            )
            [record] = meter(job, end)
            assert record.cost == 0.00001
            session.add(job)
            await repo.add(record)
        await session.commit()
        totals, _ = await repo.summary()
    await engine.dispose()
    assert totals.cost_micros == 10_000  # 1000 x 0.00001, to the micro-unit
    assert totals.cost == 0.01 and totals.seconds == 100.0
    assert sum([0.00001] * 1000) != 0.01  # what a float sum would have answered
