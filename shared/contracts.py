"""Message contracts carried over NATS. Every service that publishes or reads uses these.

The job spec is the system's central contract: the gateway builds one :class:`JobSpec` from
whatever shape a client sent, the scheduler stores and places it, the daemon runs it. Its
field limits and defaults are declared here and nowhere else.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    ValidationError,
    field_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails

# --- subjects ---------------------------------------------------------------------------------

JOBS_SUBMITTED = "jobs.submitted"
ANY = "*"  # the wildcard token: ``task_subject(ANY)`` is every provider's dispatch subject


def task_subject(provider_id: str) -> str:
    """Where a provider's daemon takes :class:`TaskDispatch` and :class:`TaskCancel`."""
    return f"tasks.dispatch.{provider_id}"


def status_subject(job_id: str) -> str:
    """Where a daemon reports :class:`TaskStatus` for a job."""
    return f"jobs.status.{job_id}"


def log_subject(job_id: str) -> str:
    """Where a daemon streams :class:`LogChunk` for a job."""
    return f"jobs.logs.{job_id}"


def start_subject(provider_id: str) -> str:
    """Where a daemon asks the scheduler, by request/reply, whether it may start an attempt
    (:class:`StartRequest` → :class:`StartAnswer`)."""
    return f"attempts.start.{provider_id}"


def heartbeat_subject(provider_id: str) -> str:
    """Where a daemon sends its heartbeat as a NATS request; the registry answers once the beat
    is committed (:data:`HEARTBEAT_OK`). The provider id in the subject is the only one the
    registry reads, and a daemon's NATS user may publish on its own subject alone."""
    return f"providers.heartbeat.{provider_id}"


HEARTBEAT_OK = "ok"
"""The registry's reply to a stored heartbeat; ``not_registered`` asks the daemon to register
again, any other reply (or none) is a failed beat."""
HEARTBEAT_NOT_REGISTERED = "not_registered"
HEARTBEAT_WAIT_SECONDS = 5.0
"""How long a daemon waits for that answer; the registry drops a beat it could not store
within this long unanswered (the daemon has moved on, and a late beat would vouch for a host
as of a moment that has passed)."""


def provider_event_subject(kind: str) -> str:
    """Where the registry announces :class:`ProviderEvent` of one kind."""
    return f"providers.events.{kind}"


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


# --- the job spec -----------------------------------------------------------------------------

DEFAULT_PRIORITY = 5
DEFAULT_MAX_RETRIES = 3
DEFAULT_INTERPRETER = "bash"
MAX_SCRIPT_BYTES = 256 * 1024

INT32_MAX = 2**31 - 1
"""The largest value an ``Integer`` column holds on PostgreSQL: every stored integer field is
bounded by it (or narrower), so an accepted value is always a storable one."""
INT64_MAX = 2**63 - 1
Offset = Annotated[int, Field(ge=0, le=INT32_MAX)]
"""A paging offset (query parameter)."""
Mebibytes = Annotated[int, Field(ge=0, le=INT32_MAX, description="MiB")]

JobType = Literal["script", "container"]
Priority = Annotated[int, Field(ge=0, le=10)]
MaxRetries = Annotated[int, Field(ge=0, le=10)]
GpuCount = Annotated[int, Field(ge=0, le=64)]
GpuGlob = Annotated[str, Field(max_length=128, description="glob, e.g. H100*")]
ComputeCapability = Annotated[str, Field(pattern=r"^\d+\.\d+$")]
TimeoutSeconds = Annotated[int, Field(ge=1, le=30 * 24 * 3600)]
DEFAULT_GRACE_SECONDS = 10
MAX_GRACE_SECONDS = 3600
GraceSeconds = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_GRACE_SECONDS,
        description="On cancel or timeout: seconds between SIGTERM and SIGKILL",
    ),
]
MAX_PRICE_PER_HOUR = 100_000.0
"""The highest price per GPU-hour a provider may ask or a job may name as its cap
(docs/scheduler.md, "Prices"). Infinity, NaN and absurd values are refused with 422."""
Price = Annotated[float, Field(ge=0, le=MAX_PRICE_PER_HOUR, allow_inf_nan=False)]
ONE_LINE = r"^[^\x00-\x1f\x7f]*$"
"""No control character: names, tags, label and variable names are one line of text."""
Tag = Annotated[str, Field(min_length=1, max_length=128, pattern=ONE_LINE)]
LabelKey = Annotated[str, Field(min_length=1, max_length=128, pattern=ONE_LINE)]
EnvName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f=]+$")]


def _object_key(key: str) -> str:
    """A storage key a job reads or writes: relative, plain characters, no ``.``/``..`` parts."""
    parts = key.split("/")
    if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError("must be a relative key without empty, '.' or '..' parts")
    return key


ObjectKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-/]{1,512}$"), AfterValidator(_object_key)]


class Resources(Message):
    """What one attempt needs from its host. ``gpu_model`` is the *requested* glob."""

    gpu_count: GpuCount = 0
    gpu_model: GpuGlob | None = None
    min_vram_mb: int = Field(default=0, ge=0, le=INT32_MAX)
    min_compute_capability: ComputeCapability | None = None
    cpu: float | None = Field(default=None, gt=0, le=1024)
    memory_mb: int | None = Field(default=None, gt=0, le=INT32_MAX)
    # a gang (multi-node) job: ``gpu_count`` on each of ``nodes`` hosts, all at once (issue 17)
    nodes: int | None = Field(default=None, ge=1, le=64)


class ScriptParams(Message):
    script_content: str = Field(min_length=1, max_length=MAX_SCRIPT_BYTES)
    script_interpreter: str = Field(default=DEFAULT_INTERPRETER, pattern=r"^[A-Za-z0-9_./-]{1,64}$")


class ContainerParams(Message):
    docker_image: str = Field(min_length=1, max_length=512)
    docker_command: str | list[str] | None = None
    docker_env_vars: dict[str, str] = Field(default_factory=dict)
    docker_gpus: str | int | None = None


ParamModels = dict[str, type[ScriptParams] | type[ContainerParams]]
PARAMS: ParamModels = {"script": ScriptParams, "container": ContainerParams}


def params_by_type(data: Any, models: ParamModels) -> Any:
    """A ``mode="before"`` step: validate ``params`` with the model its ``type`` names.

    A plain union would guess the model from the keys; errors keep their ``params`` location.
    """
    if not (isinstance(data, dict) and isinstance(data.get("params"), dict)):
        return data
    model = models.get(str(data.get("type")))
    if model is None:
        return data  # an unknown type: the ``type`` field says why
    try:
        params = model.model_validate(data["params"])
    except ValidationError as exc:
        errors: list[InitErrorDetails] = [
            {
                "type": e["type"],
                "loc": ("params", *e["loc"]),
                "input": e["input"],
                "ctx": e.get("ctx", {}),
            }
            for e in exc.errors()
        ]
        raise ValidationError.from_exception_data(exc.title, errors) from None
    return {**data, "params": params}


class JobOptions(Message):
    """Everything a job says besides its program and resources, in the spec and in a client's
    submission alike (the gateway's request model extends this class)."""

    type: JobType
    name: str = Field(min_length=1, max_length=128, pattern=ONE_LINE)
    description: str | None = Field(default=None, max_length=2000)
    priority: Priority = DEFAULT_PRIORITY
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    timeout_seconds: TimeoutSeconds | None = None
    # cancel and timeout send SIGTERM to the job's process group, wait this long, then SIGKILL
    grace_seconds: GraceSeconds = DEFAULT_GRACE_SECONDS
    max_retries: MaxRetries = DEFAULT_MAX_RETRIES
    max_price_per_hour: Price | None = None
    labels: dict[LabelKey, str] = Field(default_factory=dict)
    env: dict[EnvName, str] = Field(default_factory=dict)
    # storage keys in the owner's namespace: downloaded before the job, uploaded after it
    inputs: list[ObjectKey] = Field(default_factory=list, max_length=100)
    outputs: list[ObjectKey] = Field(default_factory=list, max_length=100)


class JobSpec(JobOptions):
    """One job, in the one shape the scheduler stores and the daemon runs.

    ``params`` is :class:`ScriptParams` for a ``script`` job and :class:`ContainerParams` for a
    ``container`` job (the ``script``/``container`` properties hand out the narrowed type).
    """

    params: ScriptParams | ContainerParams
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="before")
    @classmethod
    def _params_by_type(cls, data: Any) -> Any:
        return params_by_type(data, PARAMS)

    @property
    def script(self) -> ScriptParams:
        if not isinstance(self.params, ScriptParams):
            raise TypeError(f"a {self.type} job has no script")
        return self.params

    @property
    def container(self) -> ContainerParams:
        if not isinstance(self.params, ContainerParams):
            raise TypeError(f"a {self.type} job has no container")
        return self.params

    @field_serializer("resources", "params")
    def _without_unset_options(self, part: BaseModel, info: SerializationInfo) -> dict[str, Any]:
        """Unset optional resources and params are left out, on the wire and in storage."""
        return part.model_dump(mode=info.mode, exclude_none=True)


class JobSpecListed(Message):
    """The parts of a stored :class:`JobSpec` a job listing shows: read without validating
    the program (``params``: a script of up to 256 KiB, a container's env), which a listing
    never returns (issue 12)."""

    type: JobType
    resources: Resources = Field(default_factory=Resources)
    labels: dict[LabelKey, str] = Field(default_factory=dict)
    inputs: list[ObjectKey] = Field(default_factory=list, max_length=100)
    outputs: list[ObjectKey] = Field(default_factory=list, max_length=100)


def _spec_named_by_envelope(data: Any) -> Any:
    """A spec that does not say its ``type``/``name`` takes the message's (publishers that
    predate :class:`JobSpec` and tests send them on the message only)."""
    if isinstance(data, dict) and isinstance(data.get("spec"), dict):
        spec = data["spec"]
        named = {k: data[k] for k in ("type", "name") if k in data and k not in spec}
        if named:
            data = {**data, "spec": {**named, **spec}}
    return data


class JobSubmitted(Message):
    """``jobs.submitted``: a validated submission, published by the gateway."""

    job_id: str
    owner_id: str
    type: JobType
    name: str
    spec: JobSpec
    submitted_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _named_spec(cls, data: Any) -> Any:
        return _spec_named_by_envelope(data)


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


class GangRank(Message):
    """One rank of a gang job (issue 17): what torchrun and friends need to find each other."""

    rank: int = Field(ge=0)
    world_size: int = Field(ge=1)
    master_addr: str
    master_port: int = 29500

    def env(self) -> dict[str, str]:
        """``torchrun --nnodes=$NNODES --node_rank=$NODE_RANK --master_addr=$MASTER_ADDR``."""
        return {
            "DANTE_RANK": str(self.rank),
            "DANTE_WORLD_SIZE": str(self.world_size),
            "NODE_RANK": str(self.rank),
            "NNODES": str(self.world_size),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


class TaskDispatch(Message):
    """``tasks.dispatch.<provider_id>``: everything the daemon needs to run one attempt."""

    job_id: str
    attempt: int
    provider_id: str
    type: JobType
    name: str
    spec: JobSpec
    gpu_indices: list[int] = Field(default_factory=list)
    timeout_seconds: int | None = None
    correlation_id: str | None = None
    # dispatched but not reported running by then → the scheduler requeues the attempt
    start_deadline: datetime | None = None
    inputs: list[TaskObject] = Field(default_factory=list)
    outputs: list[TaskObject] = Field(default_factory=list)
    log_upload: TaskObject | None = None
    gang: GangRank | None = None  # this task is one rank of a gang job

    @model_validator(mode="before")
    @classmethod
    def _named_spec(cls, data: Any) -> Any:
        return _spec_named_by_envelope(data)


class TaskCancel(Message):
    """``tasks.dispatch.<provider_id>`` with ``kind=cancel``: stop this attempt now."""

    kind: Literal["cancel"] = "cancel"
    job_id: str
    attempt: int
    provider_id: str


class StartRequest(Message):
    """``attempts.start.<provider_id>`` (request/reply): "may I start this attempt now?".

    Asked by the daemon just before it starts a task, so a task taken from TASKS after its
    attempt was requeued (the scheduler deletes the message, but a daemon may have fetched it
    a moment before) never runs: the scheduler's answer is the last word (issue 19)."""

    job_id: str
    attempt: int
    rank: int = 0  # a gang's rank (issue 17); 0 for every other job


class StartAnswer(Message):
    """The scheduler's answer to :class:`StartRequest`. ``recorded``: the job is ``running``
    in the scheduler's store already (the daemon need not report it)."""

    start: bool
    recorded: bool = False
    reason: str | None = None


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


LOG_TRUNCATED = "[log truncated"
"""How the line starts that a daemon publishes where it stops an attempt's live log at its cap
(the whole log is still uploaded at the end; the gateway serves that one instead)."""


class LogChunk(Message):
    """``jobs.logs.<job_id>``: consecutive output lines; ``eof`` marks the attempt's end.

    ``rank``: which rank of a gang wrote them (0 for a job that is not a gang); each rank
    counts its own ``seq`` from 1."""

    job_id: str
    attempt: int
    seq: int
    lines: list[str] = Field(default_factory=list)
    eof: bool = False
    rank: int = 0


class GpuInfo(Message):
    """One GPU of a provider, as the registry announces it. ``name`` is the GPU's model name."""

    index: int
    name: str = ""
    memory_total_mb: int = 0
    compute_capability: str | None = None
    healthy: bool = True


class AttemptRef(Message):
    """One attempt of a job, as a daemon names what it holds (docs/scheduler.md, "Reconciling")."""

    job_id: str = Field(min_length=1, max_length=64)
    attempt: int = Field(ge=1)


MAX_HELD_ATTEMPTS = 1024
"""The most attempts one heartbeat may list (a host runs at most ``max_concurrent_tasks``)."""


class ProviderEvent(Message):
    """``providers.events.<kind>``: registry facts the scheduler keeps its provider view from.

    ``attempts`` is what the daemon said it holds in the heartbeat or registration behind this
    event: the attempts it runs now and those it finished whose status is not yet on the STATUS
    stream. ``None`` when the event says nothing about it (the sweep, an admin's status change),
    so only an event that carries a list is reconciled against.
    """

    kind: Literal["registered", "heartbeat", "status", "offline", "deleted"]
    provider_id: str
    status: str
    at: datetime
    max_concurrent_tasks: int = 1
    price_per_hour: float = 0.0
    labels: dict[str, str] = Field(default_factory=dict)
    gpus: list[GpuInfo] = Field(default_factory=list)
    # the host as its daemon reported it (0: not reported); docker: container jobs can run
    cpu_count: int = 0
    memory_mb: int = 0
    docker: bool = False
    owner_id: str | None = None  # the provider account (for its earnings); None if not sent
    attempts: list[AttemptRef] | None = None


class AttemptsHeld(Message):
    """``providers.events.held``: the attempts several providers' daemons listed as held in
    heartbeats the registry stored in one transaction at ``at`` (issue 12): provider id → its
    list as ``[job_id, attempt]`` pairs (what a :class:`ProviderEvent`'s ``attempts`` says:
    everything that daemon holds; pairs, not objects, since a batch lists thousands and an
    object each cost ~5 µs to validate). One message per batch of beats instead of an event
    per beat, so the scheduler renews their leases and reconciles them in bulk. A beat that
    changes a provider's status or health, and one beat per provider per announce interval,
    still go out as a :class:`ProviderEvent` with its list; a beat is in one of the two only.
    """

    kind: Literal["held"] = "held"
    at: datetime
    held: dict[str, list[tuple[str, int]]] = Field(default_factory=dict)


class UsageShare(Message):
    """One host's part of an attempt that ran on several (a gang's rank): its GPUs, at its own
    price, earned by its own provider."""

    provider_id: str
    provider_owner_id: str | None = None
    units: int = Field(ge=1)  # GPUs on this host (1 for a CPU-only rank)
    price_micros_per_hour: int = Field(ge=0)


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
    # a gang (issue 17): one share per rank, each charged at its host's price and earned by its
    # provider; ``units`` is then their sum and ``provider_id``/the price rank 0's. Empty: the
    # whole attempt ran on ``provider_id``. (A billing service older than this field ignores it
    # and credits rank 0's provider with everything: deploy billing first.)
    shares: list[UsageShare] = Field(default_factory=list)
