"""Kill -9 in the middle of settlement loses no money and charges nothing twice.

Real processes: nats-server, the billing service (SQLite and PostgreSQL), and for the
scheduler case the real scheduler process with simulated daemons (tests/scheduler/harness.py).
"""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import sqlalchemy as sa

from billing_service import money
from billing_service.consumer import USAGE_CONSUMER
from billing_service.main import MIGRATIONS
from shared.contracts import UsageRecorded
from shared.db import make_engine, run_migrations
from shared.nats import ensure_streams, publish
from tests.support.billing import Books, billing_process, wait_ready
from tests.support.harness import Harness, job_rows, scheduler_process, wait_healthy
from tests.support.wait import eventually_async

FEE_BP = 1000
GRANT = 10**9
FAST_BILLING = {"ack_wait_seconds": "2", "platform_fee_bp": str(FEE_BP)}


async def _drained(nats_url: str) -> bool:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().consumer_info("USAGE", USAGE_CONSUMER)
        return info.num_pending == 0 and info.num_ack_pending == 0
    finally:
        await nc.close()


async def _check_books(
    books: Books, owners: list[str], expected: dict[tuple[str, int], int]
) -> None:
    """Each (job, attempt) settled once at its charge; the books balance; no hold is left."""
    settlements = await books.settlements()
    keys = Counter((s.job_id, s.attempt) for s in settlements)
    assert set(keys) == set(expected), "an attempt was lost or invented"
    assert set(keys.values()) == {1}, "an attempt was settled twice"
    for s in settlements:
        assert s.collected_minor == expected[(s.job_id, s.attempt)], s.job_id
    total = sum(expected.values())
    for owner in owners:
        paid = sum(s.collected_minor for s in settlements if s.owner_id == owner)
        assert await books.balance(f"wallet:{owner}") == GRANT - paid
        assert await books.balance(f"hold:{owner}") == 0
    fees = await books.balance("platform:fees")
    earned = sum(s.provider_minor for s in settlements)
    assert fees + earned == total
    assert await books.open_holds() == []
    async with books.service() as svc:
        report = await svc.reconcile()
    assert report["ok"], report


async def test_billing_killed_mid_settlement_settles_everything_once(
    db_url: str, own_nats: str, tmp_path: Path
) -> None:
    await run_migrations(MIGRATIONS, db_url, "alembic_version_billing")
    books = Books(db_url)
    owners = [f"user-{i}" for i in range(3)]
    n = 400
    messages: list[UsageRecorded] = []
    expected: dict[tuple[str, int], int] = {}
    try:
        async with books.service() as svc:
            for owner in owners:
                await svc.grant(owner, GRANT, ref=f"seed-{owner}")
        start = datetime(2026, 11, 3, tzinfo=UTC)
        for i in range(n):
            job, owner = str(uuid.uuid4()), owners[i % 3]
            price, units = random.randint(1, 9) * 1_000_000, random.choice([1, 2, 4])
            async with books.service() as svc:
                await svc.place_hold(job, 1, owner, price, units, 3600)
            run_us = random.randint(0, 3_600_000_000)
            messages.append(
                UsageRecorded(
                    job_id=job,
                    attempt=1,
                    owner_id=owner,
                    provider_id=f"prov-{i % 4}",
                    state="completed",
                    final=True,
                    started_at=start,
                    ended_at=start + timedelta(microseconds=run_us),
                    run_microseconds=run_us,
                    units=units,
                    price_micros_per_hour=price,
                )
            )
            expected[(job, 1)] = money.charge_minor(run_us, price, units)

        nc = await nats.connect(own_nats)
        js = nc.jetstream()
        await ensure_streams(js, ["USAGE"])
        log = tmp_path / "billing.log"
        with billing_process(db_url, own_nats, log, **FAST_BILLING) as (proc, port):
            await wait_ready(proc, port)
            for i, msg in enumerate(messages):
                await publish(js, f"usage.recorded.{msg.job_id}", msg, msg_id=f"{msg.job_id}:1")
                if i % 5 == 0:  # a second copy that JetStream's dedup does not catch
                    await publish(js, f"usage.recorded.{msg.job_id}", msg, msg_id=f"again-{i}")

            async def some_settled() -> bool:
                return await books.count() >= 10

            await eventually_async(some_settled, limit=120, interval=0.02)
            proc.send_signal(signal.SIGKILL)  # mid-stream, mid-transaction, no goodbye
            proc.wait()
        at_kill = await books.count()
        assert at_kill < n, "everything was settled before the kill: the test proved nothing"
        with billing_process(db_url, own_nats, log, **FAST_BILLING) as (proc, port):
            await wait_ready(proc, port)

            async def all_settled() -> bool:
                return await books.count() >= n and await _drained(own_nats)

            await eventually_async(all_settled, limit=180, interval=0.25)
            # and everything once more, as a scheduler replaying its outbox would
            for msg in messages[:40]:
                await publish(
                    js, f"usage.recorded.{msg.job_id}", msg, msg_id=f"replay-{msg.job_id}"
                )

            async def replay_done() -> bool:
                return await _drained(own_nats)

            await eventually_async(replay_done, limit=60, interval=0.25)
        await nc.close()
        await _check_books(books, owners, expected)
        assert "billing.settled" in log.read_text()
    finally:
        await books.close()


async def _outbox(db_url: str) -> list[dict]:
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT payload, published_at FROM usage_outbox"))
            out = []
            for payload, published in rows:
                if isinstance(payload, str):
                    import json

                    payload = json.loads(payload)
                out.append({**payload, "published": published is not None})
            return out
    finally:
        await engine.dispose()


async def test_scheduler_killed_mid_settlement_loses_no_usage(
    own_nats: str,
    sched_db: str,
    mint_token,
    tmp_path: Path,
) -> None:
    billing_db = f"sqlite+aiosqlite:///{tmp_path}/billing.sqlite"
    await run_migrations(MIGRATIONS, billing_db, "alembic_version_billing")
    books = Books(billing_db)
    owners = [str(uuid.uuid4()) for _ in range(3)]
    fast = {
        "placement_interval_seconds": "0.2",
        "heartbeat_ttl_seconds": "3600",
        "dispatch_timeout_seconds": "5",
        "ack_wait_seconds": "5",
    }
    try:
        async with books.service() as svc:
            for owner in owners:
                await svc.grant(owner, GRANT, ref=f"seed-{owner}")
        log = tmp_path / "scheduler.log"
        async with Harness(own_nats, mint_token) as h:
            h.run_seconds = (0.05, 0.3)
            ids: list[str] = []
            with billing_process(
                billing_db, own_nats, tmp_path / "billing.log", **FAST_BILLING
            ) as (
                bproc,
                bport,
            ):
                await wait_ready(bproc, bport)
                with scheduler_process(sched_db, own_nats, log, **fast) as (proc, port):
                    await wait_healthy(proc, port)  # it creates the streams
                    # 36,000.00 per GPU-hour (1 minor unit per ms per GPU): every run costs
                    gpus = [
                        {"index": g, "name": "NVIDIA A100", "memory_total_mb": 40960}
                        for g in range(4)
                    ]
                    for i in range(10):
                        await h.announce(
                            f"prov-{i}", gpus, price_per_hour=36_000.0, max_concurrent_tasks=4
                        )
                    for i in range(150):
                        ids.append(await h.submit(random.choice(owners), random.choice([0, 1, 2])))
                        if i == 90:  # jobs are finishing: terminal commits, outbox in flight
                            proc.send_signal(signal.SIGKILL)
                            proc.wait()
                        await asyncio.sleep(0.01)
                with scheduler_process(sched_db, own_nats, log, **fast) as (proc, port):
                    await wait_healthy(proc, port)

                    async def all_settled() -> bool:
                        jobs, _ = await job_rows(sched_db)
                        done = len(jobs) == 150 and all(s == "completed" for s, _ in jobs.values())
                        finals = {s.job_id for s in await books.settlements() if s.final}
                        return done and finals >= set(ids) and await _drained(own_nats)

                    await eventually_async(all_settled, limit=180, interval=0.25)
                outbox = await _outbox(sched_db)
        assert all(row["published"] for row in outbox)
        assert {r["job_id"] for r in outbox if r["final"]} == set(ids)
        expected = {
            (r["job_id"], r["attempt"]): money.charge_minor(
                r["run_microseconds"], r["price_micros_per_hour"], r["units"]
            )
            for r in outbox
        }
        assert len(expected) == len(outbox)  # one usage per attempt
        assert sum(expected.values()) > 0
        await _check_books(books, owners, expected)
    finally:
        await books.close()
