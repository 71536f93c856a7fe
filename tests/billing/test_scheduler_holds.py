"""The scheduler's side: a hold before every dispatch, a billing outage keeps jobs queued (never
lost, never failed), and the usage it publishes is settled to the minor unit.

Real scheduler and billing apps in-process (their migrations, SQLite/PostgreSQL, one real
nats-server), a simulated daemon (tests/scheduler/harness.py). The only thing faked is the
network between scheduler and billing, cut on purpose to simulate billing being down.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing_service.main import create_app as billing_app
from billing_service.settings import BillingSettings
from scheduler.billing import HttpBilling
from tests.support.billing import Books
from tests.support.harness import Harness
from tests.support.scheduler import RTX, auth, job_in
from tests.support.wait import eventually_async

PRICE = 36.0  # per GPU-hour: 1 minor unit per 100 ms per GPU


class Cable(httpx.AsyncBaseTransport):
    """The network to billing, which the test can unplug."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.plugged = True
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if not self.plugged:
            raise httpx.ConnectError("billing unreachable", request=request)
        return await self.inner.handle_async_request(request)


class Tokens:
    def __init__(self, token: str) -> None:
        self.token = token

    async def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def invalidate(self) -> None:
        pass


@pytest.fixture
async def billing(
    tmp_path: Path, own_nats: str, local_jwks: Callable[[], Any]
) -> AsyncIterator[tuple[Books, Cable]]:
    url = f"sqlite+aiosqlite:///{tmp_path}/billing.sqlite"
    settings = BillingSettings(database_url=url, nats_url=own_nats, port=0, ack_wait_seconds=2)
    app = billing_app(settings, jwks=local_jwks)
    async with app.router.lifespan_context(app):
        books = Books(url, settings)
        try:
            yield books, Cable(httpx.ASGITransport(app=app))
        finally:
            await books.close()


def billing_over(http: httpx.AsyncClient, mint_token: Callable[..., str]) -> HttpBilling:
    """The scheduler's billing client, reaching billing through ``http`` (the cable)."""

    async def base() -> str:
        return "http://billing"

    return HttpBilling(base, http, Tokens(mint_token("service", "service:scheduler")))


async def test_holds_gate_dispatch_and_an_outage_only_delays(
    scheduler_factory: Any,
    own_nats: str,
    mint_token: Callable[..., str],
    billing: tuple[Books, Cable],
) -> None:
    books, cable = billing
    owner = str(uuid.uuid4())
    me = auth(mint_token, owner)
    async with (
        httpx.AsyncClient(transport=cable) as http,
        scheduler_factory(billing=billing_over(http, mint_token)) as (_, client),
        Harness(own_nats, mint_token, run_seconds=(0.4, 0.4)) as h,
    ):
        await h.announce("p-billed", RTX, price_per_hour=PRICE, max_concurrent_tasks=2)
        cable.plugged = False
        job_id = await h.submit(owner, 2, timeout_seconds=60)

        async def reason(text: str) -> dict | None:
            r = await client.get(f"/api/v1/jobs/{job_id}", headers=me)
            job = r.json() if r.status_code == 200 else {}
            return job if text in (job.get("waiting_reason") or "") else None

        job = await eventually_async(lambda: reason("billing unavailable"))
        assert job["status"] == "queued" and h.dispatches[job_id] == 0
        cable.plugged = True
        job = await eventually_async(lambda: reason("insufficient balance"))
        assert job["status"] == "queued" and h.dispatches[job_id] == 0
        # 60 s x 2 GPUs x 36.00/h = 120 minor units held; grant exactly that
        async with books.service() as svc:
            await svc.grant(owner, 120, ref="exact")
        job = await job_in(client, me, job_id, "completed")
        assert h.dispatches[job_id] == 1

        async def settled() -> bool:
            return any(s.job_id == job_id and s.final for s in await books.settlements())

        await eventually_async(settled)
    run = datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    run_us = (run.days * 86_400 + run.seconds) * 1_000_000 + run.microseconds
    # charge = run_us x 36,000,000 micros/h x 2 GPUs / (3.6e9 us/h x 10,000 micros per cent)
    num, den = run_us * 36_000_000 * 2, 3_600_000_000 * 10_000
    charge = (2 * num + den) // (2 * den)
    [settlement] = [s for s in await books.settlements() if s.job_id == job_id]
    assert settlement.run_microseconds == run_us  # the job's own timestamps, exactly
    assert settlement.units == 2 and settlement.charge_minor == charge
    assert await books.balance(f"wallet:{owner}") == 120 - charge
    assert await books.balance(f"hold:{owner}") == 0
    assert await books.open_holds() == []
    async with books.service() as svc:
        assert (await svc.reconcile())["ok"]


async def test_a_gangs_ranks_are_each_charged_at_their_hosts_price_and_paid_to_its_provider(
    scheduler_factory: Any,
    own_nats: str,
    mint_token: Callable[..., str],
    billing: tuple[Books, Cable],
) -> None:
    books, cable = billing
    owner = str(uuid.uuid4())
    me = auth(mint_token, owner)
    prices = {"gang-cheap": 10 * PRICE, "gang-dear": 20 * PRICE}  # 10 and 20 minor units/s
    async with (
        httpx.AsyncClient(transport=cable) as http,
        scheduler_factory(billing=billing_over(http, mint_token)) as (_, client),
        Harness(own_nats, mint_token, run_seconds=(0.4, 0.4)) as h,
    ):
        for pid, price in prices.items():
            await h.announce(pid, RTX, price_per_hour=price, owner_id=f"owner-{pid}")
        async with books.service() as svc:
            await svc.grant(owner, 5000, ref="gang")
        job_id = await h.submit(
            owner, 1, timeout_seconds=60, resources={"gpu_count": 1, "nodes": 2}
        )
        # held at the dearest host's price for both: 60 s x 2 GPUs x 720.00/h = 2400
        job = await job_in(client, me, job_id, "completed")

        async def settled() -> bool:
            return any(s.job_id == job_id and s.final for s in await books.settlements())

        await eventually_async(settled)
        # the scheduler's own usage: the requester's one attempt, each host's rank its own
        mine = (await client.get("/api/v1/usage", headers=me)).json()
        hosted = {}
        for pid in prices:
            host = auth(mint_token, f"owner-{pid}", "provider", provider_id=pid)
            hosted[pid] = (await client.get("/api/v1/usage", headers=host)).json()
    run = datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    run_us = (run.days * 86_400 + run.seconds) * 1_000_000 + run.microseconds
    den = 3_600_000_000 * 10_000

    def charge_at(price: float) -> int:  # one GPU, half up
        num = run_us * int(price * 1_000_000)
        return (2 * num + den) // (2 * den)

    [settlement] = [s for s in await books.settlements() if s.job_id == job_id]
    charges = {pid: charge_at(price) for pid, price in prices.items()}
    assert mine["totals"]["jobs"] == 1 and len(mine["records"]) == 2
    assert mine["totals"]["gpu_seconds"] == pytest.approx(2 * run.total_seconds(), abs=0.002)
    for pid, price in prices.items():
        [record] = hosted[pid]["records"]  # rank 1's provider sees its rank too
        assert (record["provider_id"], record["gpu_count"]) == (pid, 1)
        assert record["price_per_hour"] == price and hosted[pid]["totals"]["jobs"] == 1
    assert settlement.units == 2 and settlement.charge_minor == sum(charges.values())
    assert charges["gang-dear"] > charges["gang-cheap"] > 0
    fees = 0
    for pid, charge in charges.items():
        fee = (charge * 1000 * 2 + 10_000) // (2 * 10_000)  # 10 % platform fee, half up
        assert await books.balance(f"earnings:{pid}") == charge - fee, pid
        fees += fee
    assert await books.balance("platform:fees") == fees
    assert await books.balance(f"wallet:{owner}") == 5000 - sum(charges.values())
    assert await books.balance(f"hold:{owner}") == 0
    async with books.service() as svc:
        assert (await svc.reconcile())["ok"]
