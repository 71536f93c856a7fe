"""Message contracts carried over NATS. Every service that publishes or reads uses these."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class JobState(StrEnum):
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT}
)


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")


class JobSubmitted(Message):
    """``jobs.submitted``: a validated submission, published by the gateway."""

    job_id: str
    owner_id: str
    type: Literal["script", "container"]
    name: str
    spec: dict[str, Any]
    submitted_at: datetime


class TaskObject(Message):
    """One object a task reads or writes, through a presigned URL (the daemon holds no token).

    ``key`` is the storage key in the job owner's namespace. Inputs are downloaded (GET) to
    ``<workdir>/inputs/<key>`` before the job starts; outputs are uploaded (PUT) from
    ``<workdir>/outputs/<key>`` after it ends; the log goes to ``jobs/<job_id>/attempt-<n>.log``.
    """

    key: str
    url: str


def log_key(job_id: str, attempt: int) -> str:
    """Where an attempt's whole log lands in the owner's namespace."""
    return f"jobs/{job_id}/attempt-{attempt}.log"


class TaskDispatch(Message):
    """``tasks.dispatch.<provider_id>``: everything the daemon needs to run one attempt."""

    job_id: str
    attempt: int
    provider_id: str
    type: Literal["script", "container"]
    name: str
    spec: dict[str, Any]
    gpu_indices: list[int] = Field(default_factory=list)
    timeout_seconds: int | None = None
    correlation_id: str | None = None
    # dispatched but not reported running by then → the scheduler requeues the attempt
    start_deadline: datetime | None = None
    inputs: list[TaskObject] = Field(default_factory=list)
    outputs: list[TaskObject] = Field(default_factory=list)
    log_upload: TaskObject | None = None


class TaskCancel(Message):
    """``tasks.dispatch.<provider_id>`` with ``kind=cancel``: stop this attempt now."""

    kind: Literal["cancel"] = "cancel"
    job_id: str
    attempt: int
    provider_id: str


class TaskStatus(Message):
    """``jobs.status.<job_id>``: a daemon's report about one attempt."""

    job_id: str
    attempt: int
    provider_id: str
    state: JobState
    exit_code: int | None = None
    error: str | None = None
    at: datetime
    # on a terminal report: the storage keys this attempt uploaded (outputs and its log)
    artifacts: list[str] = Field(default_factory=list)


class LogChunk(Message):
    """``jobs.logs.<job_id>``: consecutive output lines; ``eof`` marks the attempt's end."""

    job_id: str
    attempt: int
    seq: int
    lines: list[str] = Field(default_factory=list)
    eof: bool = False


class ProviderEvent(Message):
    """``providers.events.<kind>``: registry facts the scheduler keeps its provider view from."""

    kind: Literal["registered", "heartbeat", "status", "offline", "deleted"]
    provider_id: str
    status: str
    at: datetime
    max_concurrent_tasks: int = 1
    price_per_hour: float = 0.0
    labels: dict[str, str] = Field(default_factory=dict)
    gpus: list[dict[str, Any]] = Field(default_factory=list)
    owner_id: str | None = None  # the provider account (for its earnings); None if not sent


class UsageRecorded(Message):
    """``usage.recorded.<job_id>``: what one attempt of a job ran, in integers, for billing.

    Published by the scheduler (from its outbox, so a crash never loses one) when an attempt
    ends: at a requeue (``final`` false) and at the job's terminal state (``final`` true, also
    for a job that never reached a host, so its holds are released). Money and time are
    integers: ``run_microseconds`` is ``ended_at - started_at`` exactly, and the price is in
    millionths of the currency unit per GPU-hour. ``Nats-Msg-Id`` = ``<job_id>:<attempt>:usage``.
    """

    job_id: str
    attempt: int
    owner_id: str
    provider_id: str | None = None
    provider_owner_id: str | None = None
    state: str
    final: bool
    started_at: datetime | None = None
    ended_at: datetime
    run_microseconds: int = Field(ge=0)
    units: int = Field(ge=1)  # GPUs billed (1 for a CPU-only task)
    gpu_model: str | None = None
    price_micros_per_hour: int = Field(ge=0)
