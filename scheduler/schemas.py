"""What the scheduler's API answers: one response model per shape (its OpenAPI declares them).

Naming: on a job, ``resources.gpu_model`` is the *requested* glob (``"H100*"``); ``gpu_name``
is the model name of the GPUs the current attempt was placed on. ``gpu_model`` at the top level
of a job and of a usage record is the older name of ``gpu_name``, kept for existing clients.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    computed_field,
    field_serializer,
)

from scheduler.models import Job
from shared.contracts import (
    ContainerParams,
    JobSpec,
    JobSpecListed,
    JobState,
    JobType,
    Resources,
)


class Out(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class _OlderGpuName(Out):
    gpu_name: str | None = Field(description="model name of the placed GPUs")

    @computed_field(description="the same as gpu_name (its older name)")  # type: ignore[prop-decorator]
    @property
    def gpu_model(self) -> str | None:
        return self.gpu_name


class JobRank(Out):
    """One rank of a gang job's current attempt: the host it runs on and how it is doing."""

    rank: int
    provider_id: str
    gpu_indices: list[int]
    state: JobState
    exit_code: int | None = None


class JobRead(_OlderGpuName):
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
    effective_priority: float | None = Field(
        default=None, description="fair-share multifactor priority (docs/scheduler.md)"
    )
    preemptions: int = Field(default=0, description="attempts ended by preemption")
    ranks: list[JobRank] = Field(
        default_factory=list,
        description="a gang job's ranks, one per host (rank 0 is also provider_id); else empty",
    )
    price_per_hour: float | None
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
    def of(cls, job: Job, spec: JobSpecListed | JobSpec | None = None) -> JobRead:
        """``spec``: the job's spec if already read; else only the listed parts are read."""
        spec = spec or job.listed_spec
        return cls(
            **{name: getattr(job, name) for name in _AS_STORED},
            job_id=job.id,
            type=spec.type,
            status=JobState(job.state),
            ranks=[JobRank.model_validate(r) for r in job.gang or []],
            resources=spec.resources,
            labels=spec.labels,
            inputs=spec.inputs,
            outputs=spec.outputs,
            waiting_reason=job.wait_reason if job.state == JobState.QUEUED else None,
            effective_priority=job.effective_priority,
            preemptions=job.preemptions or 0,
        )


_AS_STORED = (
    *("name", "exit_code", "error", "provider_id", "gpu_indices", "attempt", "max_retries"),
    *("priority", "tags", "owner_id", "max_price_per_hour", "artifacts", "price_per_hour"),
    *("gpu_name", "created_at", "updated_at", "dispatched_at", "start_deadline", "started_at"),
    "finished_at",
)
"""The fields of :class:`JobRead` that are a ``Job`` column under the same name."""


class JobDetail(JobRead):
    """One job (not a listing, where a 256 KiB script would repeat 500 times): also what it
    runs, so it can be read back and rerun. Environment values may be secrets: only their
    names are shown (an admin sees every job)."""

    params: dict[str, Any]
    env_names: list[str]
    timeout_seconds: int | None

    @classmethod
    def of(cls, job: Job, spec: JobSpecListed | JobSpec | None = None) -> JobDetail:
        spec = spec if isinstance(spec, JobSpec) else job.job_spec  # the whole spec, read once
        params = spec.params.model_dump(mode="json", exclude_none=True)
        if isinstance(spec.params, ContainerParams):  # env values may be secrets: names only
            params.update(docker_env_vars=dict.fromkeys(spec.params.docker_env_vars, ""))
        return cls(
            **JobRead.of(job, spec).model_dump(exclude={"gpu_model"}),
            params=params,
            env_names=sorted(spec.env),
            timeout_seconds=spec.timeout_seconds,
        )


class JobList(Out):
    jobs: list[JobRead]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class JobEventRead(Out):
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    at: datetime
    from_state: JobState | None = Field(
        validation_alias=AliasChoices("from_state", "from"), serialization_alias="from"
    )
    to_state: JobState = Field(
        validation_alias=AliasChoices("to_state", "to"), serialization_alias="to"
    )
    attempt: int
    cause: str


class JobEvents(Out):
    job_id: str
    events: list[JobEventRead]


class JobSpecRead(Out):
    """The job as submitted (normalized), so a client can submit it again (``dante rerun``)."""

    job_id: str
    spec: JobSpec


class CancelAccepted(Out):
    job_id: str
    status: JobState
    message: str = "cancellation requested"


class UsageTotals(Out):
    jobs: int
    seconds: float
    gpu_seconds: float
    cost: float
    cost_micros: int
    """The exact cost in integer micro-units, for whoever adds totals up further (billing)."""


class UsageByGpu(UsageTotals, _OlderGpuName):
    pass


class UsageRecordRead(_OlderGpuName):
    model_config = ConfigDict(from_attributes=True)

    job_id: str
    attempt: int
    state: JobState
    provider_id: str
    gpu_count: int
    started_at: datetime
    ended_at: datetime
    seconds: float
    gpu_seconds: float
    price_per_hour: float
    cost: float


UsageScope = Literal["requester", "provider", "all"]


class UsageRead(Out):
    scope: UsageScope
    provider_ids: list[str] | None
    totals: UsageTotals
    by_gpu_model: list[UsageByGpu]
    records: list[UsageRecordRead]
