"""Double-entry posting: every transaction's legs sum to zero, or nothing is written.

Account ids say what they are (``wallet:<user>``, ``hold:<user>``, ``earnings:<provider>``,
``platform:fees``, ``platform:storage``, ``external:<source>``). Sign convention: a positive
balance is money the platform owes that account (a wallet's credit, a provider's earnings, the
platform's revenue); ``external:*`` accounts are the outside world (grants, card payments,
payouts) and are the only ones that go negative freely, so the books as a whole sum to zero.

Limits enforced at every posting, under row locks (taken in account-id order):
- a wallet never goes below ``-credit_limit_minor`` (0 for prepaid users);
- holds, earnings and platform accounts never go below zero.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from billing_service.errors import InsufficientBalance, InvalidAmount, UnbalancedTransaction
from billing_service.models import Account, Entry, LedgerTxn
from billing_service.repository import LedgerRepository
from shared.db import utcnow

Leg = tuple[str, int]

PLATFORM_FEES = "platform:fees"
PLATFORM_STORAGE = "platform:storage"


def wallet(user_id: str) -> str:
    return f"wallet:{user_id}"


def hold_account(user_id: str) -> str:
    return f"hold:{user_id}"


def earnings(provider_id: str) -> str:
    return f"earnings:{provider_id}"


def external(source: str) -> str:
    return f"external:{source}"


def _kind_owner(account_id: str) -> tuple[str, str | None]:
    kind, _, owner = account_id.partition(":")
    return kind, (owner if kind in ("wallet", "hold", "earnings") else None)


class Ledger:
    def __init__(self, repo: LedgerRepository) -> None:
        self.repo = repo

    async def lock(
        self, ids: list[str], owners: dict[str, str] | None = None
    ) -> dict[str, Account]:
        """Create missing accounts, then lock them all in id order."""
        rows: list[dict[str, Any]] = []
        for aid in sorted(set(ids)):
            kind, owner = _kind_owner(aid)
            rows.append(
                {
                    "id": aid,
                    "kind": kind,
                    "owner_id": (owners or {}).get(aid, owner),
                    "credit_limit_minor": 0,
                    "balance_minor": 0,
                    "created_at": utcnow(),
                }
            )
        await self.repo.ensure_accounts(rows)
        return await self.repo.lock_accounts(ids)

    @staticmethod
    def available(account: Account) -> int:
        """What a wallet can still spend: its balance plus its credit limit."""
        return account.balance_minor + account.credit_limit_minor

    async def post(
        self,
        *,
        ref: str,
        kind: str,
        legs: list[Leg],
        job_id: str | None = None,
        memo: str = "",
        owners: dict[str, str] | None = None,
    ) -> LedgerTxn | None:
        """Write one balanced transaction; ``None`` if ``ref`` was posted before (idempotent)."""
        if await self.repo.txn_by_ref(ref) is not None:
            return None
        merged: dict[str, int] = defaultdict(int)
        for account_id, amount in legs:
            if not isinstance(amount, int) or isinstance(amount, bool):
                raise InvalidAmount("ledger amounts are integers in minor units")
            merged[account_id] += amount
        if sum(merged.values()) != 0:
            raise UnbalancedTransaction(f"legs of {ref} sum to {sum(merged.values())}")
        legs = [(a, v) for a, v in sorted(merged.items()) if v != 0]
        accounts = await self.lock([a for a, _ in legs], owners)
        for account_id, amount in legs:
            acct = accounts[account_id]
            after = acct.balance_minor + amount
            if acct.kind == "wallet" and amount < 0 and after < -acct.credit_limit_minor:
                raise InsufficientBalance(-amount, self.available(acct))
            if acct.kind in ("hold", "earnings", "platform") and after < 0:
                raise UnbalancedTransaction(f"{account_id} would go below zero ({after})")
        txn = LedgerTxn(ref=ref, kind=kind, job_id=job_id, memo=memo[:255], created_at=utcnow())
        await self.repo.add(txn)
        entries = []
        for account_id, amount in legs:
            accounts[account_id].balance_minor += amount
            entries.append(Entry(txn_id=txn.id, account_id=account_id, amount_minor=amount))
        await self.repo.add(*entries)
        return txn
