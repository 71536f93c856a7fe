"""The ledger's tables. Money columns are BigInteger minor units; nothing here is a float."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, UTCDateTime, utcnow


class BillingBase(Base):
    __abstract__ = True
    metadata = sa.MetaData()


class Account(BillingBase):
    """One ledger account. ``balance_minor`` is a cache of the sum of its entries, updated in
    the same transaction as they are written (reconciliation checks the two agree)."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(sa.String(80), primary_key=True)  # "<kind>:<owner>"
    kind: Mapped[str] = mapped_column(sa.String(16), index=True)
    owner_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True, index=True)
    # wallets only: how far below zero the balance may go (postpaid accounts; admin sets it)
    credit_limit_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    balance_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LedgerTxn(BillingBase):
    """A balanced set of entries. ``ref`` is the idempotency key: posting the same ref twice
    changes nothing (a redelivered event, a retried request)."""

    __tablename__ = "ledger_txns"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    ref: Mapped[str] = mapped_column(sa.String(160), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(24), index=True)
    job_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True, index=True)
    memo: Mapped[str] = mapped_column(sa.String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Entry(BillingBase):
    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    txn_id: Mapped[int] = mapped_column(sa.ForeignKey("ledger_txns.id"), index=True)
    account_id: Mapped[str] = mapped_column(sa.ForeignKey("accounts.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Hold(BillingBase):
    """Funds set aside for one attempt of a job before it is dispatched."""

    __tablename__ = "holds"
    __table_args__ = (sa.UniqueConstraint("job_id", "attempt", name="uq_hold_job_attempt"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    attempt: Mapped[int] = mapped_column(sa.Integer)
    owner_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    price_micros_per_hour: Mapped[int] = mapped_column(sa.BigInteger)
    units: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(12), index=True)  # open|settled|released
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Settlement(BillingBase):
    """One attempt's usage, charged once: the unique key is what makes redelivery harmless."""

    __tablename__ = "settlements"
    __table_args__ = (sa.UniqueConstraint("job_id", "attempt", name="uq_settlement_job_attempt"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    attempt: Mapped[int] = mapped_column(sa.Integer)
    owner_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    provider_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True, index=True)
    state: Mapped[str] = mapped_column(sa.String(16))
    final: Mapped[bool] = mapped_column(sa.Boolean)
    gpu_model: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    run_microseconds: Mapped[int] = mapped_column(sa.BigInteger)
    units: Mapped[int] = mapped_column(sa.Integer)
    price_micros_per_hour: Mapped[int] = mapped_column(sa.BigInteger)
    charge_minor: Mapped[int] = mapped_column(sa.BigInteger)  # what the usage cost
    collected_minor: Mapped[int] = mapped_column(sa.BigInteger)  # what the wallet could pay
    fee_minor: Mapped[int] = mapped_column(sa.BigInteger)
    provider_minor: Mapped[int] = mapped_column(sa.BigInteger)
    settled_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class StorageUsage(BillingBase):
    """One storage sample per user: bytes held since the previous sample, charged as
    byte-hours (bytes x time since the last sample)."""

    __tablename__ = "storage_usage"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    sampled_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    bytes: Mapped[int] = mapped_column(sa.BigInteger)
    seconds: Mapped[int] = mapped_column(sa.BigInteger)
    byte_seconds: Mapped[int] = mapped_column(sa.BigInteger)
    charge_minor: Mapped[int] = mapped_column(sa.BigInteger)


class PaymentEvent(BillingBase):
    """A payment provider's event, processed once (idempotency by the provider's event id)."""

    __tablename__ = "payment_events"

    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    provider: Mapped[str] = mapped_column(sa.String(16))
    type: Mapped[str] = mapped_column(sa.String(64))
    user_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
