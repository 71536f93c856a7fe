"""What the scheduler's API answers: one response model per shape (its OpenAPI declares them).

Naming: on a job, ``resources.gpu_model`` is the *requested* glob (``"H100*"``); ``gpu_name``
is the model name of the GPUs the current attempt was placed on. ``gpu_model`` at the top level
of a job and of a usage record is the older name of ``gpu_name``, kept for existing clients.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializationInfo, field_serializer

from scheduler.models import Job, JobEvent, UsageRecord
from shared.contracts import JobState, JobType, Resources


class Out(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class JobRead(Out):
    job_id: str
    name: str
    type: JobType
    status: JobState
    exit_code: int | None
    error: str | None
    provider_id: str | None
    gpu_indices: list[int]
    attempt: int
    max_retries: int
    priority: int
    tags: list[str]
    owner_id: str
    resources: Resources = Field(description="what the job asked for (gpu_model: a glob)")
    max_price_per_hour: float | None
    labels: dict[str, str]
    inputs: list[str]
    outputs: list[str]
    artifacts: list[dict[str, str]]
    waiting_reason: str | None = Field(description="why a queued job still waits")
    price_per_hour: float | None
    gpu_name: str | None = Field(description="model name of the GPUs this attempt runs on")
    gpu_model: str | None = Field(description="the same as gpu_name (its older name)")
    created_at: datetime
    updated_at: datetime
    dispatched_at: datetime | None
    start_deadline: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @field_serializer("resources")
    def _set_resources(self, res: Resources, info: SerializationInfo) -> dict[str, Any]:
        return res.model_dump(mode=info.mode, exclude_none=True)

    @classmethod
    def of(cls, job: Job) -> JobRead:
        spec = job.job_spec
        return cls(
            job_id=job.id,
            name=job.name,
            type=spec.type,
            status=JobState(job.state),
            exit_code=job.exit_code,
            error=job.error,
            provider_id=job.provider_id,
            gpu_indices=list(job.gpu_indices or []),
            attempt=job.attempt,
            max_retries=job.max_retries,
            priority=job.priority,
            tags=list(job.tags or []),
            owner_id=job.owner_id,
            resources=spec.resources,
            max_price_per_hour=job.max_price_per_hour,
            labels=spec.labels,
            inputs=spec.inputs,
            outputs=spec.outputs,
            artifacts=list(job.artifacts or []),
            waiting_reason=job.wait_reason if job.state == JobState.QUEUED else None,
            price_per_hour=job.price_per_hour,
            gpu_name=job.gpu_name,
            gpu_model=job.gpu_name,
            created_at=job.created_at,
            updated_at=job.updated_at,
            dispatched_at=job.dispatched_at,
            start_deadline=job.start_deadline,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )


class JobList(Out):
    jobs: list[JobRead]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class JobEventRead(Out):
    at: datetime
    from_state: JobState | None = Field(alias="from")
    to_state: JobState = Field(alias="to")
    attempt: int
    cause: str

    @classmethod
    def of(cls, e: JobEvent) -> JobEventRead:
        return cls(
            at=e.at,
            from_state=JobState(e.from_state) if e.from_state else None,
            to_state=JobState(e.to_state),
            attempt=e.attempt,
            cause=e.cause,
        )


class JobEvents(Out):
    job_id: str
    events: list[JobEventRead]


class CancelAccepted(Out):
    job_id: str
    status: JobState
    message: str = "cancellation requested"


class UsageTotals(Out):
    jobs: int
    seconds: float
    gpu_seconds: float
    cost: float


class UsageByGpu(UsageTotals):
    gpu_name: str | None
    gpu_model: str | None = Field(description="the same as gpu_name (its older name)")


class UsageRecordRead(Out):
    job_id: str
    attempt: int
    state: JobState
    provider_id: str
    gpu_name: str | None
    gpu_model: str | None = Field(description="the same as gpu_name (its older name)")
    gpu_count: int
    started_at: datetime
    ended_at: datetime
    seconds: float
    gpu_seconds: float
    price_per_hour: float
    cost: float

    @classmethod
    def of(cls, r: UsageRecord) -> UsageRecordRead:
        return cls(
            job_id=r.job_id,
            attempt=r.attempt,
            state=JobState(r.state),
            provider_id=r.provider_id,
            gpu_name=r.gpu_name,
            gpu_model=r.gpu_name,
            gpu_count=r.gpu_count,
            started_at=r.started_at,
            ended_at=r.ended_at,
            seconds=r.seconds,
            gpu_seconds=r.gpu_seconds,
            price_per_hour=r.price_per_hour,
            cost=r.cost,
        )


UsageScope = Literal["requester", "provider", "all"]


class UsageRead(Out):
    scope: UsageScope
    provider_ids: list[str] | None
    totals: UsageTotals
    by_gpu_model: list[UsageByGpu]
    records: list[UsageRecordRead]
