"""The job submission: the original flat shape and the native spec, validated strictly."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts import (
    INT32_MAX,
    PARAMS,
    ComputeCapability,
    ContainerParams,
    GpuCount,
    GpuGlob,
    JobOptions,
    JobSpec,
    JobState,
    ParamModels,
    Price,
    Resources,
    ScriptParams,
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


class JobSubmission(JobOptions):
    """What a client posts: the original flat shape, the native spec, or a mix that agrees."""

    model_config = STRICT

    params: ScriptParamsIn | ContainerParamsIn
    resources: ResourcesIn | None = None
    # the original flat fields
    gpu_type: GpuGlob | None = None
    gpu_count: GpuCount | None = None
    # flat aliases of native fields, for clients that keep everything at the top level
    gpu_model: GpuGlob | None = None
    min_vram_mb: int | None = Field(default=None, ge=0, le=INT32_MAX)
    min_compute_capability: ComputeCapability | None = None
    max_price: Price | None = None

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
        max_price = flat.pop("max_price")
        res = Resources.model_validate((self.resources or Resources()).model_dump())
        res = res.model_copy(update={k: v for k, v in flat.items() if v is not None})
        options = self.model_dump(include=set(JobOptions.model_fields))
        if options["max_price_per_hour"] is None:
            options["max_price_per_hour"] = max_price
        # the plain contract models: the strict ``*In`` subclasses are for the request only
        params = PARAMS[self.type].model_validate(self.params.model_dump())
        return JobSpec(**options, params=params, resources=res)


class JobAccepted(BaseModel):
    """``202``: the job is on the queue; the scheduler stores it within milliseconds."""

    job_id: str
    status: JobState = JobState.QUEUED
    timestamp: str = Field(description="when it was accepted, ISO 8601 with offset")
    message: str = "job accepted for scheduling"
