from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_MINOR = 10**15  # a quadrillion minor units: far above any real amount, far below int64


class BalanceOut(BaseModel):
    user_id: str
    available_minor: int
    balance_minor: int
    held_minor: int
    credit_limit_minor: int
    currency: str


class GrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=64)
    amount_minor: int = Field(gt=0, le=MAX_MINOR)
    # the idempotency key: the same reference credits once, however often it is sent
    reference: str = Field(min_length=1, max_length=120)
    memo: str = Field(default="", max_length=200)


class GrantOut(BaseModel):
    credited: bool
    balance: BalanceOut


class CreditLimitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credit_limit_minor: int = Field(ge=0, le=MAX_MINOR)


class HoldIn(BaseModel):
    """What the scheduler sends before dispatching one attempt."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1, max_length=36)
    attempt: int = Field(ge=1)
    owner_id: str = Field(min_length=1, max_length=64)
    price_micros_per_hour: int = Field(ge=0, le=MAX_MINOR)
    units: int = Field(ge=1, le=1024)
    timeout_seconds: int | None = Field(default=None, ge=1)


class HoldOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    job_id: str
    attempt: int
    owner_id: str
    amount_minor: int
    status: str


class PayoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_minor: int = Field(gt=0, le=MAX_MINOR)
    reference: str = Field(min_length=1, max_length=120)


class CheckoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_minor: int = Field(gt=0, le=MAX_MINOR)


# --- what the routes answer -----------------------------------------------------------------
# Times are ISO 8601 strings, as the invoice and statement builders write them.


class CheckoutOut(BaseModel):
    session_id: str
    url: str | None = Field(description="Stripe's payment page for the user")


class WebhookOut(BaseModel):
    event_id: str
    duplicate: bool = Field(description="the event was seen before and changed nothing")
    credited_minor: int


class JobLine(BaseModel):
    kind: Literal["job"]
    job_id: str
    attempt: int
    state: str
    provider_id: str | None
    gpu_model: str | None
    started_at: str | None
    ended_at: str
    run_microseconds: int
    units: int
    price_micros_per_hour: int
    charge_minor: int
    amount_minor: int = Field(description="what was collected (the charge up to the limit)")


class StorageLine(BaseModel):
    kind: Literal["storage"]
    sampled_at: str
    bytes: int
    byte_seconds: int
    amount_minor: int


class InvoiceOut(BaseModel):
    invoice_id: str
    user_id: str
    month: str
    period_start: str
    period_end: str = Field(description="exclusive")
    currency: str
    lines: list[Annotated[JobLine | StorageLine, Field(discriminator="kind")]]
    subtotal_minor: int
    tax_rate_bp: int
    tax_minor: int
    total_minor: int


class PayoutLine(BaseModel):
    job_id: str
    attempt: int
    ended_at: str
    run_microseconds: int
    units: int
    gross_minor: int
    fee_minor: int
    earned_minor: int


class PayoutStatementOut(BaseModel):
    provider_id: str
    month: str
    currency: str
    platform_fee_bp: int
    lines: list[PayoutLine]
    gross_minor: int
    fee_minor: int
    earned_minor: int
    balance_minor: int = Field(description="the provider's earnings not yet paid out, now")


class PayoutOut(BaseModel):
    paid: bool = Field(description="false: this reference was paid before")
    balance_minor: int


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    owner_id: str | None
    balance_minor: int
    credit_limit_minor: int


class AccountsOut(BaseModel):
    currency: str
    accounts: list[AccountOut]


class EntryOut(BaseModel):
    txn: str
    kind: str
    job_id: str | None
    amount_minor: int
    at: str


class EntriesOut(BaseModel):
    account: str
    entries: list[EntryOut]


class HoldsOut(BaseModel):
    holds: list[HoldOut]


class DriftedAccount(BaseModel):
    account: str
    cached: int
    entries: int


class BelowLimit(BaseModel):
    account: str
    balance: int
    credit_limit: int


class ReconciliationOut(BaseModel):
    ok: bool
    total_minor: int = Field(description="the sum of every account: 0 when the books balance")
    unbalanced_txns: list[int]
    drifted_accounts: list[DriftedAccount]
    below_limit: list[BelowLimit]
    checked_at: str
