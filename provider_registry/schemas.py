from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.contracts import INT32_MAX, MAX_HELD_ATTEMPTS, MAX_PRICE_PER_HOUR, ONE_LINE, LabelKey


class ProviderStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    MAINTENANCE = "maintenance"
    DRAINING = "draining"


class Strict(BaseModel):
    # Infinity and NaN parse from JSON but are no quantity: refused like any bad value.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class GpuIn(Strict):
    index: int = Field(ge=0, le=255)
    uuid: str = Field(default="", max_length=64)
    name: str = Field(max_length=128, pattern=ONE_LINE)
    memory_total_mb: int = Field(ge=0, le=INT32_MAX)
    compute_capability: str | None = Field(default=None, max_length=8)
    power_limit_w: float | None = Field(default=None, ge=0, le=100_000)
    healthy: bool = True


class AttemptIn(Strict):
    """An attempt the daemon holds: running, or finished with its status not yet published."""

    job_id: str = Field(min_length=1, max_length=64)
    attempt: int = Field(ge=1, le=INT32_MAX)


# None: the daemon said nothing (older daemons); a list, even empty, is all it holds now.
HeldAttempts = list[AttemptIn] | None


class ProviderIn(Strict):
    name: str = Field(min_length=1, max_length=128, pattern=ONE_LINE)
    hostname: str = Field(default="", max_length=255, pattern=ONE_LINE)
    cpu_count: int = Field(default=0, ge=0, le=INT32_MAX)
    memory_mb: int = Field(default=0, ge=0, le=INT32_MAX)
    docker: bool = False  # a Docker engine answers on the host: container jobs can run there
    max_concurrent_tasks: int = Field(default=1, ge=1, le=1024)
    price_per_hour: float = Field(default=0.0, ge=0, le=MAX_PRICE_PER_HOUR)
    labels: dict[LabelKey, str] = Field(default_factory=dict)
    driver_version: str | None = Field(default=None, max_length=64)
    cuda_version: str | None = Field(default=None, max_length=32)
    gpus: list[GpuIn] = Field(default_factory=list, max_length=64)
    attempts: HeldAttempts = Field(default=None, max_length=MAX_HELD_ATTEMPTS)

    @field_validator("gpus")
    @classmethod
    def _one_gpu_per_index(cls, gpus: list[GpuIn]) -> list[GpuIn]:
        indices = [g.index for g in gpus]
        if len(set(indices)) != len(indices):
            raise ValueError("two GPUs with the same index: each index names one GPU")
        return gpus


class GpuMetrics(Strict):
    index: int = Field(ge=0, le=255)
    utilization_pct: float | None = None
    memory_used_mb: float | None = None
    temperature_c: float | None = None
    power_draw_w: float | None = None
    healthy: bool = True
    xid_errors: int | None = None
    retired_pages: int | None = None


class HeartbeatIn(Strict):
    gpus: list[GpuMetrics] = Field(default_factory=list, max_length=64)
    running_tasks: int = Field(default=0, ge=0, le=INT32_MAX)
    attempts: HeldAttempts = Field(default=None, max_length=MAX_HELD_ATTEMPTS)


class StatusIn(Strict):
    status: ProviderStatus


class GpuOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    index: int
    uuid: str
    name: str
    memory_total_mb: int
    compute_capability: str | None
    power_limit_w: float | None
    healthy: bool
    metrics: dict[str, Any]


class ProviderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    owner_id: str
    name: str
    hostname: str
    status: str
    cpu_count: int
    memory_mb: int
    docker: bool
    max_concurrent_tasks: int
    price_per_hour: float
    labels: dict[str, str]
    driver_version: str | None
    cuda_version: str | None
    last_heartbeat_at: datetime | None
    registered_at: datetime
    updated_at: datetime
    gpus: list[GpuOut]


class ProviderList(BaseModel):
    providers: list[ProviderOut]
    total: int | None = Field(
        default=None, description="every match counted: only with ?count=true (issue 12)"
    )
    has_more: bool = Field(default=False, description="more match after this page")
    next_cursor: str | None = Field(default=None, description="pass as ?cursor= for the next page")
