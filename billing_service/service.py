"""Billing decisions: grants, holds, settlement, payouts, credit limits, reconciliation.

Every operation is one unit of work and idempotent by a key the caller cannot vary by accident
(a hold and a settlement by job id and attempt, a grant or payout by its reference, a payment
by the provider's event id), so a retried request or a redelivered message changes nothing.
"""

from __future__ import annotations

from typing import Any

import structlog
from prometheus_client import Counter, Gauge

from billing_service import money
from billing_service.errors import HoldConflict, InsufficientBalance, InvalidAmount
from billing_service.ledger import (
    PLATFORM_FEES,
    Ledger,
    earnings,
    external,
    hold_account,
    wallet,
)
from billing_service.models import Hold, Settlement
from billing_service.repository import (
    HoldRepository,
    LedgerRepository,
    PaymentRepository,
    SettlementRepository,
)
from billing_service.schemas import BalanceOut
from billing_service.settings import BillingSettings
from shared.contracts import UsageRecorded, UsageShare
from shared.db import UnitOfWork, utcnow

log = structlog.get_logger(__name__)

settled_total = Counter(
    "dante_billing_settlements_total", "Attempts settled (first delivery only).", ["final"]
)
charged_minor = Counter("dante_billing_charged_minor_total", "Minor units charged to wallets.")
holds_refused = Counter("dante_billing_holds_refused_total", "Holds refused for lack of funds.")
books_balanced = Gauge(
    "dante_billing_books_balanced", "1 if the last reconciliation found the books balanced."
)


class BillingService:
    def __init__(self, uow: UnitOfWork, settings: BillingSettings) -> None:
        self.uow = uow
        self.settings = settings
        self.repo = LedgerRepository(uow.session)
        self.ledger = Ledger(self.repo)
        self.holds = HoldRepository(uow.session)
        self.settlements = SettlementRepository(uow.session)
        self.payments = PaymentRepository(uow.session)

    # --- wallets ----------------------------------------------------------------------------

    async def balance(self, user_id: str) -> BalanceOut:
        w = await self.repo.account(wallet(user_id))
        h = await self.repo.account(hold_account(user_id))
        bal = w.balance_minor if w else 0
        limit = w.credit_limit_minor if w else 0
        return BalanceOut(
            user_id=user_id,
            available_minor=bal + limit,
            balance_minor=bal,
            held_minor=h.balance_minor if h else 0,
            credit_limit_minor=limit,
            currency=self.settings.currency,
        )

    async def grant(
        self, user_id: str, amount: int, ref: str, memo: str = "", source: str = "grants"
    ) -> bool:
        """Credit a wallet from outside (an admin grant, a card payment). False: seen before."""
        if amount <= 0:
            raise InvalidAmount("a grant is a positive number of minor units")
        txn = await self.ledger.post(
            ref=f"{source}:{ref}",
            kind="grant" if source == "grants" else "payment",
            legs=[(external(source), -amount), (wallet(user_id), amount)],
            memo=memo,
        )
        if txn is not None:
            log.info("billing.credited", user_id=user_id, amount=amount, source=source)
        return txn is not None

    async def set_credit_limit(self, user_id: str, limit: int) -> BalanceOut:
        if limit < 0:
            raise InvalidAmount("a credit limit is zero or more minor units")
        accounts = await self.ledger.lock([wallet(user_id)])
        acct = accounts[wallet(user_id)]
        if acct.balance_minor < -limit:
            raise InvalidAmount(
                f"the wallet is already at {acct.balance_minor}; the limit cannot be below that"
            )
        acct.credit_limit_minor = limit
        log.info("billing.credit_limit_set", user_id=user_id, limit=limit)
        return await self.balance(user_id)

    # --- holds ------------------------------------------------------------------------------

    def hold_amount(self, price_micros_per_hour: int, units: int, timeout: int | None) -> int:
        cap = self.settings.hold_cap_seconds
        seconds = min(timeout, cap) if timeout and timeout > 0 else cap
        return money.hold_minor(seconds, price_micros_per_hour, units)

    async def place_hold(
        self,
        job_id: str,
        attempt: int,
        owner_id: str,
        price_micros_per_hour: int,
        units: int,
        timeout_seconds: int | None,
    ) -> tuple[Hold, bool]:
        """Set funds aside for one attempt; ``(hold, created)``. Asking again returns the hold
        made before (the scheduler's round may have rolled back after the first answer)."""
        existing = await self.holds.get(job_id, attempt, for_update=True)
        if existing is not None:
            return existing, False
        # A late request (sent before the job ended, arriving after its final usage was
        # settled) would otherwise leave a hold nobody ever releases.
        if await self.settlements.get(job_id, attempt) or await self.settlements.final_of(job_id):
            raise HoldConflict("this job attempt has already been settled")
        amount = self.hold_amount(price_micros_per_hour, units, timeout_seconds)
        w = wallet(owner_id)
        accounts = await self.ledger.lock([w, hold_account(owner_id)])
        if amount > self.ledger.available(accounts[w]):
            holds_refused.inc()
            raise InsufficientBalance(amount, self.ledger.available(accounts[w]))
        hold = Hold(
            job_id=job_id,
            attempt=attempt,
            owner_id=owner_id,
            amount_minor=amount,
            price_micros_per_hour=price_micros_per_hour,
            units=units,
            status="open",
            created_at=utcnow(),
        )
        await self.ledger.post(
            ref=f"hold:{job_id}:{attempt}",
            kind="hold",
            legs=[(w, -amount), (hold_account(owner_id), amount)],
            job_id=job_id,
        )
        await self.repo.add(hold)
        return hold, True

    # --- settlement -------------------------------------------------------------------------

    async def settle(self, usage: UsageRecorded) -> Settlement:
        """Charge one attempt for the time it ran, release the rest of its hold; at the job's
        end release every other hold it still has. Once per (job, attempt), whatever happens."""
        done = await self.settlements.get(usage.job_id, usage.attempt)
        if done is not None:
            return done
        owner = usage.owner_id
        w, h = wallet(owner), hold_account(owner)
        shares = _shares(usage)  # one per host: a gang's ranks are each paid their own part
        owners = {
            earnings(x.provider_id): x.provider_owner_id for x in shares if x.provider_owner_id
        }
        provs = [earnings(x.provider_id) for x in shares]
        accounts = await self.ledger.lock([w, h, *provs, PLATFORM_FEES], owners or None)
        this_hold = await self.holds.get(usage.job_id, usage.attempt, for_update=True)
        releases = [this_hold] if this_hold is not None and this_hold.status == "open" else []
        if usage.final:
            releases += [
                x for x in await self.holds.open_for_job(usage.job_id) if x is not this_hold
            ]
        held = sum(x.amount_minor for x in releases)
        charges = [
            money.charge_minor(usage.run_microseconds, x.price_micros_per_hour, x.units)
            for x in shares
        ]
        charge = sum(charges)
        # What the wallet can pay once the holds are back: normally the hold covers it; a
        # run beyond the hold (no timeout, past the cap) is charged up to the credit limit and
        # the rest is recorded as uncollected on the settlement, never as a negative balance.
        can_pay = max(0, self.ledger.available(accounts[w]) + held)
        collected = min(charge, can_pay)
        legs = [(h, -held), (w, held - collected)]
        provider_share = 0
        for prov, part in zip(provs, money.pro_rata(collected, charges), strict=True):
            share, _ = money.fee_split(part, self.settings.platform_fee_bp)
            legs.append((prov, share))
            provider_share += share
        fee = collected - provider_share  # with no host (never ran): nothing was charged
        legs.append((PLATFORM_FEES, fee))
        await self.ledger.post(
            ref=f"settle:{usage.job_id}:{usage.attempt}",
            kind="settlement",
            legs=legs,
            job_id=usage.job_id,
            owners=owners or None,
            memo=f"{usage.state}: {usage.run_microseconds} us x {usage.units}"
            + (f" on {len(shares)} hosts" if len(shares) > 1 else ""),
        )
        now = utcnow()
        for x in releases:
            x.status = "settled" if x is this_hold else "released"
            x.closed_at = now
        settlement = Settlement(
            job_id=usage.job_id,
            attempt=usage.attempt,
            owner_id=owner,
            provider_id=usage.provider_id,
            state=usage.state,
            final=usage.final,
            gpu_model=usage.gpu_model,
            started_at=usage.started_at,
            ended_at=usage.ended_at,
            run_microseconds=usage.run_microseconds,
            units=usage.units,
            price_micros_per_hour=usage.price_micros_per_hour,
            charge_minor=charge,
            collected_minor=collected,
            fee_minor=fee,
            provider_minor=provider_share,
            settled_at=now,
        )
        await self.repo.add(settlement)
        settled_total.labels(str(usage.final).lower()).inc()
        charged_minor.inc(collected)
        log.info(
            "billing.settled",
            job_id=usage.job_id,
            attempt=usage.attempt,
            charge=charge,
            collected=collected,
            fee=fee,
            released=held,
        )
        return settlement

    # --- payouts ----------------------------------------------------------------------------

    async def payout(self, provider_id: str, amount: int, ref: str) -> bool:
        """Pay a provider's earnings out (recorded here; the transfer itself is outside)."""
        if amount <= 0:
            raise InvalidAmount("a payout is a positive number of minor units")
        acct = (await self.ledger.lock([earnings(provider_id)]))[earnings(provider_id)]
        if acct.balance_minor < amount:
            raise InsufficientBalance(amount, acct.balance_minor)
        txn = await self.ledger.post(
            ref=f"payout:{ref}",
            kind="payout",
            legs=[(earnings(provider_id), -amount), (external("payouts"), amount)],
        )
        return txn is not None

    # --- reconciliation ---------------------------------------------------------------------

    async def reconcile(self) -> dict[str, Any]:
        """The books sum to zero, every transaction balances, every cached balance equals the
        sum of its entries, and no wallet is below its credit limit."""
        total = await self.repo.total()
        unbalanced = await self.repo.unbalanced_txns()
        drifted = await self.repo.drifted_accounts()
        below = [
            {"account": a.id, "balance": a.balance_minor, "credit_limit": a.credit_limit_minor}
            for a in await self.repo.accounts()
            if (a.kind == "wallet" and a.balance_minor < -a.credit_limit_minor)
            or (a.kind in ("hold", "earnings", "platform") and a.balance_minor < 0)
        ]
        ok = total == 0 and not unbalanced and not drifted and not below
        books_balanced.set(1 if ok else 0)
        result = {
            "ok": ok,
            "total_minor": total,
            "unbalanced_txns": unbalanced,
            "drifted_accounts": drifted,
            "below_limit": below,
            "checked_at": utcnow().isoformat(),
        }
        (log.info if ok else log.error)("billing.reconciled", ok=ok, total=total)
        return result


def _shares(usage: UsageRecorded) -> list[UsageShare]:
    """Who earns what of an attempt: its gang ranks, else its one host, else nobody (an
    attempt that never reached a host is charged nothing)."""
    if usage.shares:
        return usage.shares
    if not usage.provider_id:
        return []
    return [
        UsageShare(
            provider_id=usage.provider_id,
            provider_owner_id=usage.provider_owner_id,
            units=usage.units,
            price_micros_per_hour=usage.price_micros_per_hour,
        )
    ]
