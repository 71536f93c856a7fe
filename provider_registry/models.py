from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shared.db import Base, UTCDateTime, utcnow


class RegistryBase(Base):
    __abstract__ = True
    metadata = sa.MetaData()


class Provider(RegistryBase):
    __tablename__ = "providers"
    # the search's page order (GET /api/v1/providers): a page is read in index order (issue 12)
    __table_args__ = (
        sa.Index("ix_providers_registered", "registered_at", "id"),
        sa.Index("ix_providers_status_registered", "status", "registered_at", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    name: Mapped[str] = mapped_column(sa.String(128))
    hostname: Mapped[str] = mapped_column(sa.String(255), default="")
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    cpu_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    memory_mb: Mapped[int] = mapped_column(sa.Integer, default=0)
    docker: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    max_concurrent_tasks: Mapped[int] = mapped_column(sa.Integer, default=1)
    price_per_hour: Mapped[float] = mapped_column(sa.Float, default=0.0)
    labels: Mapped[dict[str, str]] = mapped_column(sa.JSON, default=dict)
    driver_version: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    cuda_version: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # The GPUs as the search filters them, on the provider's own row (issue 12): a page of the
    # search is then read along ix_providers_registered alone, each row tested as it comes,
    # instead of probing (or joining) the gpus table per provider. Written with the GPU rows
    # at (re-)registration, the only place a GPU's name or memory changes (gpu_summary).
    gpu_names: Mapped[str] = mapped_column(sa.Text, default="", server_default="")
    gpu_max_vram_mb: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")

    gpus: Mapped[list[Gpu]] = relationship(
        back_populates="provider",
        cascade="all, delete-orphan",
        order_by="Gpu.index",
        lazy="selectin",
    )


GPU_NAMES_SEP = "\n"
"""Between (and around) the names in ``Provider.gpu_names``; no GPU name holds a control
character (``ONE_LINE``), so a name is always whole between two of them."""


def gpu_summary(gpus: Iterable[tuple[str, int]]) -> tuple[str, int]:
    """``(gpu_names, gpu_max_vram_mb)`` for a provider's GPUs given as (name, memory MiB):
    each distinct name lower-cased, sorted, one per line with a newline before the first and
    after the last (``""`` without GPUs); and the largest memory (0 without GPUs)."""
    gpus = list(gpus)
    if not gpus:
        return "", 0
    names = sorted({name.lower() for name, _ in gpus})
    return GPU_NAMES_SEP + GPU_NAMES_SEP.join(names) + GPU_NAMES_SEP, max(m for _, m in gpus)


class Gpu(RegistryBase):
    __tablename__ = "gpus"

    provider_id: Mapped[str] = mapped_column(
        sa.ForeignKey("providers.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(sa.String(64), default="")
    name: Mapped[str] = mapped_column(sa.String(128), index=True)
    memory_total_mb: Mapped[int] = mapped_column(sa.Integer, default=0)
    compute_capability: Mapped[str | None] = mapped_column(sa.String(8), nullable=True)
    power_limit_w: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    healthy: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)

    provider: Mapped[Provider] = relationship(back_populates="gpus")


class ProviderEventOutbox(RegistryBase):
    """A provider event, written in the transaction that made it true, until it is on
    JetStream (provider_registry/outbox.py): a crash between commit and publish loses none."""

    __tablename__ = "provider_event_outbox"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    msg_id: Mapped[str] = mapped_column(sa.String(36))  # the stream drops a resent duplicate
    subject: Mapped[str] = mapped_column(sa.String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
