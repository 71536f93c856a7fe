from __future__ import annotations

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
