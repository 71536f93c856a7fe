"""Typed answers of the public API. Unknown fields are kept (``extra="allow"``), so a newer
gateway that adds a field never breaks an older client."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TERMINAL_STATES = frozenset({"completed", "failed", "cancelled", "timed_out"})


class Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Tokens(Model):
    """A login or refresh answer."""

    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_at: datetime | None = None
    user_id: str | None = None
    username: str | None = None
    role: str | None = None


class User(Model):
    user_id: str
    username: str
    role: str
    email: str | None = None
    display_name: str | None = None
    active: bool = True
    created_at: datetime | None = None


class Submitted(Model):
    job_id: str
    status: str
    timestamp: datetime | None = None
    message: str | None = None


class Artifact(Model):
    key: str
    kind: str = "output"


class JobRank(Model):
    """One rank of a gang job's current attempt (``resources.nodes`` > 1)."""

    rank: int
    provider_id: str
    gpu_indices: list[int] = Field(default_factory=list)
    state: str
    exit_code: int | None = None


class Job(Model):
    job_id: str
    status: str
    name: str | None = None
    type: str | None = None
    exit_code: int | None = None
    error: str | None = None
    provider_id: str | None = None
    gpu_indices: list[int] = Field(default_factory=list)
    attempt: int = 0
    max_retries: int | None = None
    priority: int | None = None
    tags: list[str] = Field(default_factory=list)
    owner_id: str | None = None
    resources: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    inputs: list[str] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    artifacts: list[Artifact] = Field(default_factory=list)
    waiting_reason: str | None = None
    effective_priority: float | None = None  # fair share (docs/scheduler.md)
    preemptions: int = 0
    ranks: list[JobRank] = Field(default_factory=list)  # a gang's hosts, rank 0 first
    price_per_hour: float | None = None
    gpu_model: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATES


class JobPage(Model):
    jobs: list[Job]
    next_cursor: str | None = None


class JobEvent(Model):
    at: datetime
    from_state: str | None = Field(default=None, alias="from")
    to_state: str = Field(alias="to")
    attempt: int = 0
    cause: str | None = None


class LogLine(Model):
    """One line of a job's output. ``id`` is the stream position it came from (resume point)."""

    line: str
    id: str | None = None


class GpuInfo(Model):
    index: int
    uuid: str = ""
    name: str
    memory_total_mb: int = 0
    compute_capability: str | None = None
    healthy: bool = True
    metrics: dict[str, Any] = Field(default_factory=dict)


class Provider(Model):
    id: str
    name: str
    status: str
    owner_id: str | None = None
    hostname: str = ""
    cpu_count: int = 0
    memory_mb: int = 0
    max_concurrent_tasks: int = 1
    price_per_hour: float = 0.0
    labels: dict[str, str] = Field(default_factory=dict)
    last_heartbeat_at: datetime | None = None
    gpus: list[GpuInfo] = Field(default_factory=list)


class StoredObject(Model):
    key: str
    size: int
    etag: str = ""
    bucket: str | None = None
    owner: str | None = None
    last_modified: datetime | None = None
    content_type: str | None = None


class ObjectPage(Model):
    objects: list[StoredObject]
    next_cursor: str | None = None


class UsageRecord(Model):
    job_id: str
    attempt: int = 1
    state: str | None = None
    provider_id: str | None = None
    gpu_model: str | None = None
    gpu_count: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    seconds: float = 0
    gpu_seconds: float = 0
    price_per_hour: float | None = None
    cost: Any = None


class Usage(Model):
    """What the caller used (requester), earned (provider) or everything (admin)."""

    scope: str
    totals: dict[str, Any] = Field(default_factory=dict)
    by_gpu_model: list[dict[str, Any]] = Field(default_factory=list)
    records: list[UsageRecord] = Field(default_factory=list)


class ApiKey(Model):
    key_id: str
    provider_id: str
    name: str
    prefix: str = ""
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class NewApiKey(Model):
    """Returned once, at creation: ``api_key`` is never shown again."""

    key_id: str
    api_key: str
    provider_id: str
    name: str
    expires_at: datetime | None = None
