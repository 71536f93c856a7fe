"""Queries. Repositories add and flush; the unit of work commits (shared/db.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from billing_service.models import (
    Account,
    Entry,
    Hold,
    LedgerTxn,
    PaymentEvent,
    Settlement,
    StorageUsage,
)


class LedgerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def ensure_accounts(self, rows: list[dict[str, Any]]) -> None:
        """Create accounts that do not exist yet; a concurrent creator is not an error."""
        if not rows:
            return
        dialect = self.session.bind.dialect.name if self.session.bind else "sqlite"
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(Account).values(rows).on_conflict_do_nothing(index_elements=["id"])
        await self.session.execute(stmt)

    async def lock_accounts(self, ids: list[str]) -> dict[str, Account]:
        """The accounts, row-locked in id order (one order everywhere: no deadlocks)."""
        stmt = (
            sa.select(Account)
            .where(Account.id.in_(sorted(set(ids))))
            .order_by(Account.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return {a.id: a for a in (await self.session.execute(stmt)).scalars()}

    async def account(self, account_id: str) -> Account | None:
        return await self.session.get(Account, account_id)

    async def txn_by_ref(self, ref: str) -> LedgerTxn | None:
        stmt = sa.select(LedgerTxn).where(LedgerTxn.ref == ref)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def add(self, *objs: Any) -> None:
        self.session.add_all(objs)
        await self.session.flush()

    async def accounts(self, kind: str | None = None, limit: int = 500) -> list[Account]:
        stmt = sa.select(Account).order_by(Account.id).limit(limit)
        if kind:
            stmt = stmt.where(Account.kind == kind)
        return list((await self.session.execute(stmt)).scalars())

    async def entries_of(self, account_id: str, limit: int = 200) -> list[tuple[Entry, LedgerTxn]]:
        stmt = (
            sa.select(Entry, LedgerTxn)
            .join(LedgerTxn, LedgerTxn.id == Entry.txn_id)
            .where(Entry.account_id == account_id)
            .order_by(Entry.id.desc())
            .limit(limit)
        )
        return [(e, t) for e, t in (await self.session.execute(stmt)).all()]

    # --- reconciliation -------------------------------------------------------------------

    async def total(self) -> int:
        got = await self.session.execute(
            sa.select(sa.func.coalesce(sa.func.sum(Entry.amount_minor), 0))
        )
        return int(got.scalar_one())

    async def unbalanced_txns(self) -> list[int]:
        stmt = (
            sa.select(Entry.txn_id)
            .group_by(Entry.txn_id)
            .having(sa.func.sum(Entry.amount_minor) != 0)
        )
        return [int(r) for r in (await self.session.execute(stmt)).scalars()]

    async def drifted_accounts(self) -> list[dict[str, Any]]:
        """Accounts whose cached balance differs from the sum of their entries."""
        sums = (
            sa.select(Entry.account_id, sa.func.sum(Entry.amount_minor).label("s"))
            .group_by(Entry.account_id)
            .subquery()
        )
        stmt = sa.select(Account.id, Account.balance_minor, sums.c.s).outerjoin(
            sums, sums.c.account_id == Account.id
        )
        out = []
        for aid, cached, summed in (await self.session.execute(stmt)).all():
            if int(cached) != int(summed or 0):
                out.append({"account": aid, "cached": int(cached), "entries": int(summed or 0)})
        return out


class HoldRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, job_id: str, attempt: int, *, for_update: bool = False) -> Hold | None:
        stmt = sa.select(Hold).where(Hold.job_id == job_id, Hold.attempt == attempt)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def open_for_job(self, job_id: str) -> list[Hold]:
        stmt = (
            sa.select(Hold)
            .where(Hold.job_id == job_id, Hold.status == "open")
            .order_by(Hold.attempt)
            .with_for_update()
        )
        return list((await self.session.execute(stmt)).scalars())

    async def open(self, limit: int = 500) -> list[Hold]:
        stmt = sa.select(Hold).where(Hold.status == "open").order_by(Hold.created_at).limit(limit)
        return list((await self.session.execute(stmt)).scalars())


class SettlementRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, job_id: str, attempt: int) -> Settlement | None:
        stmt = sa.select(Settlement).where(
            Settlement.job_id == job_id, Settlement.attempt == attempt
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def final_of(self, job_id: str) -> Settlement | None:
        stmt = sa.select(Settlement).where(Settlement.job_id == job_id, Settlement.final.is_(True))
        return (await self.session.execute(stmt.limit(1))).scalar_one_or_none()

    async def for_owner(self, owner_id: str, since: datetime, until: datetime) -> list[Settlement]:
        return await self._ended_between(Settlement.owner_id == owner_id, since, until)

    async def for_provider(
        self, provider_id: str, since: datetime, until: datetime
    ) -> list[Settlement]:
        return await self._ended_between(Settlement.provider_id == provider_id, since, until)

    async def _ended_between(
        self, whose: sa.ColumnElement[bool], since: datetime, until: datetime
    ) -> list[Settlement]:
        stmt = (
            sa.select(Settlement)
            .where(whose, Settlement.ended_at >= since, Settlement.ended_at < until)
            .order_by(Settlement.ended_at, Settlement.job_id, Settlement.attempt)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def storage_for(
        self, user_id: str, since: datetime, until: datetime
    ) -> list[StorageUsage]:
        stmt = (
            sa.select(StorageUsage)
            .where(
                StorageUsage.user_id == user_id,
                StorageUsage.sampled_at >= since,
                StorageUsage.sampled_at < until,
            )
            .order_by(StorageUsage.sampled_at)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def storage_owners(self) -> list[str]:
        stmt = sa.select(StorageUsage.user_id).distinct()
        return list((await self.session.execute(stmt)).scalars())

    async def last_storage_sample(self, user_id: str) -> StorageUsage | None:
        stmt = (
            sa.select(StorageUsage)
            .where(StorageUsage.user_id == user_id)
            .order_by(StorageUsage.sampled_at.desc())
            .limit(1)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()


class PaymentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, event_id: str) -> PaymentEvent | None:
        return await self.session.get(PaymentEvent, event_id)
