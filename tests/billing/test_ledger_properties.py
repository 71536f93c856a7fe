"""Property tests of the ledger over random histories (hypothesis), on a real SQLite database.

A history mixes grants, credit-limit changes, holds (and the scheduler asking again), usage
settlements (requeues and final ones), redeliveries of earlier messages, and crashes: an
operation whose unit of work dies before its commit. After every step the books must balance
and every account must match a model kept by the test; at the end, once every message has been
delivered, every attempt is settled exactly once and no hold is left open.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import async_sessionmaker

from billing_service import money
from billing_service.errors import HoldConflict, InsufficientBalance, InvalidAmount
from billing_service.models import Account, BillingBase, Hold, LedgerTxn, Settlement
from billing_service.service import BillingService
from billing_service.settings import BillingSettings
from shared.contracts import UsageRecorded
from shared.db import make_engine, unit_of_work

USERS = ["u1", "u2", "u3"]
PROVIDERS = ["p1", "p2"]
JOBS = {f"j{i}": USERS[i % len(USERS)] for i in range(6)}
SETTINGS = BillingSettings(platform_fee_bp=1250, hold_cap_seconds=600)


class Crash(Exception):
    """The process dies after the work, before the commit."""


job_ids = st.sampled_from(sorted(JOBS))
attempts = st.integers(1, 3)
ops = st.one_of(
    st.tuples(st.just("grant"), st.sampled_from(USERS), st.integers(1, 50_000)),
    st.tuples(st.just("limit"), st.sampled_from(USERS), st.integers(0, 20_000)),
    st.tuples(
        st.just("hold"),
        job_ids,
        attempts,
        st.integers(0, 5_000_000),  # price, micros per GPU-hour
        st.integers(1, 8),
        st.one_of(st.none(), st.integers(1, 3600)),
    ),
    st.tuples(
        st.just("usage"),
        job_ids,
        attempts,
        st.integers(0, 7_200_000_000),  # up to 2 h of run time
        st.booleans(),  # final
        st.sampled_from([*PROVIDERS, None]),
    ),
    st.tuples(st.just("redeliver"), st.integers(0, 1000)),
    st.tuples(st.just("crash"), st.integers(0, 1000)),
)


def usage(job: str, attempt: int, run_us: int, final: bool, provider: str | None) -> UsageRecorded:
    held_price = 3_000_000
    return UsageRecorded(
        job_id=job,
        attempt=attempt,
        owner_id=JOBS[job],
        provider_id=provider,
        state="completed" if final else "queued",
        final=final,
        started_at=datetime(2026, 11, 1, tzinfo=UTC) if provider else None,
        ended_at=datetime(2026, 11, 2, tzinfo=UTC),
        run_microseconds=run_us if provider else 0,
        units=2,
        price_micros_per_hour=held_price if provider else 0,
    )


class Model:
    """What the books must say, kept independently of the service."""

    def __init__(self) -> None:
        self.granted: Counter[str] = Counter()
        self.sent: list[UsageRecorded] = []


async def apply(sessions: async_sessionmaker, op: tuple, model: Model, crash: bool = False) -> None:
    kind = op[0]
    try:
        async with unit_of_work(sessions) as uow:
            svc = BillingService(uow, SETTINGS)
            if kind == "grant":
                _, user, amount = op
                ref = f"g{len(model.sent)}-{model.granted[user]}-{amount}"
                if await svc.grant(user, amount, ref) and not crash:
                    model.granted[user] += amount
            elif kind == "limit":
                await svc.set_credit_limit(op[1], op[2])
            elif kind == "hold":
                _, job, attempt, price, units, timeout = op
                await svc.place_hold(job, attempt, JOBS[job], price, units, timeout)
            elif kind == "usage":
                msg = usage(*op[1:])
                if not crash:
                    model.sent.append(msg)
                await svc.settle(msg)
            elif kind == "redeliver" and model.sent:
                await svc.settle(model.sent[op[1] % len(model.sent)])
            if crash:
                raise Crash
    except (InsufficientBalance, InvalidAmount, HoldConflict, Crash):
        pass


async def check(sessions: async_sessionmaker, model: Model) -> None:
    async with unit_of_work(sessions) as uow:
        s = uow.session
        report = await BillingService(uow, SETTINGS).reconcile()
        assert report["ok"], report
        accounts = {a.id: a for a in (await s.execute(sa.select(Account))).scalars()}
        settlements = list((await s.execute(sa.select(Settlement))).scalars())
        holds = list((await s.execute(sa.select(Hold))).scalars())
        refs = Counter(r for r in (await s.execute(sa.select(LedgerTxn.ref))).scalars())
        assert max(refs.values(), default=1) == 1
        keys = Counter((x.job_id, x.attempt) for x in settlements)
        assert max(keys.values(), default=1) == 1, "an attempt settled twice"

        def bal(aid: str) -> int:
            return accounts[aid].balance_minor if aid in accounts else 0

        for user in USERS:
            w = accounts.get(f"wallet:{user}")
            if w is not None:  # never below its credit limit
                assert w.balance_minor >= -w.credit_limit_minor
            paid = sum(x.collected_minor for x in settlements if x.owner_id == user)
            open_held = sum(
                h.amount_minor for h in holds if h.owner_id == user and h.status == "open"
            )
            assert bal(f"hold:{user}") == open_held
            assert bal(f"wallet:{user}") + open_held == model.granted[user] - paid
        for x in settlements:
            assert x.collected_minor <= x.charge_minor
            assert x.charge_minor == money.charge_minor(
                x.run_microseconds, x.price_micros_per_hour, x.units
            )
            assert x.fee_minor + x.provider_minor == x.collected_minor
        for p in PROVIDERS:
            assert bal(f"earnings:{p}") == sum(
                x.provider_minor for x in settlements if x.provider_id == p
            )
        assert bal("platform:fees") == sum(x.fee_minor for x in settlements)
        finals = {x.job_id for x in settlements if x.final}
        assert not [h for h in holds if h.job_id in finals and h.status == "open"]


async def run(history: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'ledger.sqlite'}")
        async with engine.begin() as conn:
            await conn.run_sync(BillingBase.metadata.create_all)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        model = Model()
        try:
            for i, op in enumerate(history):
                if op[0] == "crash":
                    # the next operation of the history, dying before its commit
                    nxt = history[(i + 1) % len(history)]
                    if nxt[0] != "crash":
                        await apply(sessions, nxt, model, crash=True)
                else:
                    await apply(sessions, op, model)
                await check(sessions, model)
            # Deliver everything once more (redelivery after the fact) and a final message
            # for every job: every attempt with a hold ends settled exactly once.
            for msg in list(model.sent):
                await apply(sessions, ("redeliver", model.sent.index(msg)), model)
            for job in JOBS:
                await apply(sessions, ("usage", job, 9, 0, True, None), model)
            await check(sessions, model)
            async with unit_of_work(sessions) as uow:
                holds = (await uow.session.execute(sa.select(Hold))).scalars().all()
                assert all(h.status != "open" for h in holds)
        finally:
            await engine.dispose()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(ops, min_size=1, max_size=30))
def test_books_balance_and_each_attempt_settles_once(history: list[tuple]) -> None:
    asyncio.run(run(history))


def test_a_crash_mid_settlement_then_redelivery_settles_once() -> None:
    """The case the property is about, spelled out: a hold, a settlement that dies before its
    commit, the redelivery, and a duplicate."""
    history = [
        ("grant", "u1", 10_000),
        ("hold", "j0", 1, 3_000_000, 2, 60),
        ("crash", 0),
        ("usage", "j0", 1, 30_000_000, True, "p1"),
        ("redeliver", 0),
        # found by hypothesis: a hold arriving after the job's final settlement is refused,
        # or it would stay open forever
        ("usage", "j2", 2, 517_891_757, True, "p1"),
        ("hold", "j2", 2, 773, 2, None),
    ]
    asyncio.run(run(history))


def test_reconciliation_notices_tampered_books(tmp_path: Path) -> None:
    """A cached balance edited behind the ledger's back, and an entry without its other leg."""

    async def scenario() -> None:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'tamper.sqlite'}")
        async with engine.begin() as conn:
            await conn.run_sync(BillingBase.metadata.create_all)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        try:
            async with unit_of_work(sessions) as uow:
                await BillingService(uow, SETTINGS).grant("u1", 500, "r")
            async with unit_of_work(sessions) as uow:
                assert (await BillingService(uow, SETTINGS).reconcile())["ok"]
                await uow.session.execute(
                    sa.text("UPDATE accounts SET balance_minor = 501 WHERE id = 'wallet:u1'")
                )
            async with unit_of_work(sessions) as uow:
                report = await BillingService(uow, SETTINGS).reconcile()
                assert not report["ok"]
                assert report["drifted_accounts"] == [
                    {"account": "wallet:u1", "cached": 501, "entries": 500}
                ]
                await uow.session.execute(
                    sa.text("UPDATE accounts SET balance_minor = 500 WHERE id = 'wallet:u1'")
                )
                await uow.session.execute(
                    sa.text(
                        "INSERT INTO ledger_entries (txn_id, account_id, amount_minor, created_at)"
                        " VALUES (1, 'wallet:u1', 7, '2026-11-01 00:00:00')"
                    )
                )
            async with unit_of_work(sessions) as uow:
                report = await BillingService(uow, SETTINGS).reconcile()
                assert not report["ok"] and report["total_minor"] == 7
                assert report["unbalanced_txns"] == [1]
        finally:
            await engine.dispose()

    asyncio.run(scenario())


@given(
    st.integers(min_value=0, max_value=10**12),
    st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=64),
)
def test_pro_rata_parts_add_up_and_stay_within_one_unit_of_the_exact_share(
    total: int, weights: list[int]
) -> None:
    """A gang's collected charge split among its hosts: nothing created, nothing lost."""
    parts = money.pro_rata(total, weights)
    assert sum(parts) == total and len(parts) == len(weights)
    whole = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        assert part >= 0
        if whole:  # each part is its exact share rounded down or up
            assert abs(part * whole - total * weight) < whole
