"""The job submission: the original flat shape and the native spec, validated strictly."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_PRIORITY,
    PARAMS,
    ComputeCapability,
    ContainerParams,
    GpuCount,
    GpuGlob,
    JobSpec,
    JobState,
    JobType,
    MaxRetries,
    ObjectKey,
    ParamModels,
    Price,
    Priority,
    Resources,
    ScriptParams,
    Tag,
    TimeoutSeconds,
    params_by_type,
)

STRICT = ConfigDict(extra="forbid")
"""A client's request is refused on an unknown field (a typo must not be silently dropped)."""


class ResourcesIn(Resources):
    model_config = STRICT


class ScriptParamsIn(ScriptParams):
    model_config = STRICT


class ContainerParamsIn(ContainerParams):
    model_config = STRICT


PARAMS_IN: ParamModels = {"script": ScriptParamsIn, "container": ContainerParamsIn}


def docker_gpu_count(value: str | int) -> int | None:
    """How many GPUs ``docker_gpus`` asks for: ``2``, ``"2"``, ``"0,1"``, ``"device=0,1"``;
    ``"all"`` → None (any number: the client must say how many). Device ids only count: on a
    shared host the scheduler assigns the indices."""
    if isinstance(value, int):
        if not 0 <= value <= 64:
            raise ValueError("docker_gpus must be between 0 and 64")
        return value
    text = value.strip().strip('"').removeprefix("device=")
    if text == "all":
        return None
    if text.isdigit():
        return docker_gpu_count(int(text))
    ids = [part.strip() for part in text.split(",")]
    if not all(ids) or len(ids) > 64:
        raise ValueError("docker_gpus must be a count, 'all', or a list of device ids")
    return len(ids)


class JobSubmission(BaseModel):
    """What a client posts: the original flat shape, the native spec, or a mix that agrees."""

    model_config = STRICT

    type: JobType
    name: str = Field(min_length=1, max_length=128)
    params: ScriptParamsIn | ContainerParamsIn
    description: str | None = Field(default=None, max_length=2000)
    # the original flat fields
    gpu_type: GpuGlob | None = None
    gpu_count: GpuCount | None = None
    priority: Priority = DEFAULT_PRIORITY
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    # flat aliases of native fields, for clients that keep everything at the top level
    gpu_model: GpuGlob | None = None
    min_vram_mb: int | None = Field(default=None, ge=0)
    min_compute_capability: ComputeCapability | None = None
    max_price: Price | None = None
    # the native spec
    resources: ResourcesIn | None = None
    timeout_seconds: TimeoutSeconds | None = None
    max_retries: MaxRetries = DEFAULT_MAX_RETRIES
    max_price_per_hour: Price | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    # storage keys in the owner's namespace: downloaded before the job, uploaded after it
    inputs: list[ObjectKey] = Field(default_factory=list, max_length=100)
    outputs: list[ObjectKey] = Field(default_factory=list, max_length=100)

    @model_validator(mode="before")
    @classmethod
    def _params_match_type(cls, data: Any) -> Any:
        return params_by_type(data, PARAMS_IN)

    @model_validator(mode="after")
    def _docker_gpus_agree(self) -> Self:
        """The original's ``docker_gpus`` asks for a number of GPUs; the scheduler picks which."""
        if not isinstance(self.params, ContainerParams) or self.params.docker_gpus in (None, ""):
            return self
        asked = docker_gpu_count(self.params.docker_gpus)
        explicit = self.gpu_count
        if explicit is None and self.resources and "gpu_count" in self.resources.model_fields_set:
            explicit = self.resources.gpu_count
        if asked is None and explicit is None:
            raise ValueError("docker_gpus 'all' cannot be placed: say how many with gpu_count")
        if asked is not None and explicit is not None and asked != explicit:
            raise ValueError("docker_gpus and gpu_count disagree")
        if explicit is None:
            self.gpu_count = asked
        return self

    @model_validator(mode="after")
    def _aliases_agree(self) -> Self:
        """A flat alias and its native field may both be given only if they say the same."""
        res = self.resources
        native = {k: getattr(res, k) for k in res.model_fields_set} if res else {}
        native["max_price"] = self.max_price_per_hour
        for name, value in self._flat().items():
            other = native.get(name)
            if value is not None and other is not None and value != other:
                raise ValueError(f"{name} is given twice with different values")
        return self

    def _flat(self) -> dict[str, Any]:
        if self.gpu_model and self.gpu_type and self.gpu_model != self.gpu_type:
            raise ValueError("gpu_type and gpu_model disagree")
        return {
            "gpu_count": self.gpu_count,
            "gpu_model": self.gpu_model or self.gpu_type,
            "min_vram_mb": self.min_vram_mb,
            "min_compute_capability": self.min_compute_capability,
            "max_price": self.max_price,
        }

    def to_spec(self) -> JobSpec:
        """One spec for the scheduler and daemon, whatever shape the client used."""
        flat = self._flat()
        del flat["max_price"]
        res = Resources.model_validate((self.resources or Resources()).model_dump())
        res = res.model_copy(update={k: v for k, v in flat.items() if v is not None})
        # the plain contract models: the strict ``*In`` subclasses are for the request only
        params = PARAMS[self.type].model_validate(self.params.model_dump())
        return JobSpec(
            type=self.type,
            name=self.name,
            description=self.description,
            params=params,
            resources=res,
            priority=self.priority,
            tags=self.tags,
            timeout_seconds=self.timeout_seconds,
            max_retries=self.max_retries,
            max_price_per_hour=(
                self.max_price_per_hour if self.max_price_per_hour is not None else self.max_price
            ),
            labels=self.labels,
            env=self.env,
            inputs=self.inputs,
            outputs=self.outputs,
        )


class JobAccepted(BaseModel):
    """``202``: the job is on the queue; the scheduler stores it within milliseconds."""

    job_id: str
    status: JobState = JobState.QUEUED
    timestamp: str = Field(description="when it was accepted, ISO 8601 with offset")
    message: str = "job accepted for scheduling"
