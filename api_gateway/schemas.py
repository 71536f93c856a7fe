"""The job submission: the original flat shape and the native spec, validated strictly."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

MAX_SCRIPT_BYTES = 256 * 1024
MAX_PRICE_PER_HOUR = 100_000.0
"""The highest price cap a job may name, per GPU-hour: the registry's maximum provider price
(docs/scheduler.md, "Prices"). Infinity, NaN and absurd values are refused with 422."""


def _object_key(key: str) -> str:
    """A storage key a job reads or writes: relative, plain characters, no ``.``/``..`` parts."""
    parts = key.split("/")
    if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError("must be a relative key without empty, '.' or '..' parts")
    return key


ObjectKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-/]{1,512}$"), AfterValidator(_object_key)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Resources(Strict):
    gpu_count: int = Field(default=0, ge=0, le=64)
    gpu_model: str | None = Field(default=None, max_length=128, description="glob, e.g. H100*")
    min_vram_mb: int = Field(default=0, ge=0)
    min_compute_capability: str | None = Field(default=None, pattern=r"^\d+\.\d+$")
    cpu: float | None = Field(default=None, gt=0, le=1024)
    memory_mb: int | None = Field(default=None, gt=0)


class ScriptParams(Strict):
    script_content: str = Field(min_length=1, max_length=MAX_SCRIPT_BYTES)
    script_interpreter: str = Field(default="bash", pattern=r"^[A-Za-z0-9_./-]{1,64}$")


class ContainerParams(Strict):
    docker_image: str = Field(min_length=1, max_length=512)
    docker_command: str | list[str] | None = None
    docker_env_vars: dict[str, str] = Field(default_factory=dict)
    docker_gpus: str | int | None = None


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


class JobSubmission(Strict):
    type: Literal["script", "container"]
    name: str = Field(min_length=1, max_length=128)
    params: dict[str, Any]
    description: str | None = Field(default=None, max_length=2000)
    # the original flat fields
    gpu_type: str | None = Field(default=None, max_length=128)
    gpu_count: int | None = Field(default=None, ge=0, le=64)
    priority: int = Field(default=5, ge=0, le=10)
    tags: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=32
    )
    # flat aliases of native fields, for clients that keep everything at the top level
    gpu_model: str | None = Field(default=None, max_length=128)
    min_vram_mb: int | None = Field(default=None, ge=0)
    min_compute_capability: str | None = Field(default=None, pattern=r"^\d+\.\d+$")
    max_price: float | None = Field(default=None, ge=0, le=MAX_PRICE_PER_HOUR)
    # the native spec
    resources: Resources | None = None
    timeout_seconds: int | None = Field(default=None, ge=1, le=30 * 24 * 3600)
    max_retries: int = Field(default=3, ge=0, le=10)
    max_price_per_hour: float | None = Field(default=None, ge=0, le=MAX_PRICE_PER_HOUR)
    labels: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    # storage keys in the owner's namespace: downloaded before the job, uploaded after it
    inputs: list[ObjectKey] = Field(default_factory=list, max_length=100)
    outputs: list[ObjectKey] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _params_match_type(self) -> Self:
        model = ScriptParams if self.type == "script" else ContainerParams
        self.params = model.model_validate(self.params).model_dump(exclude_none=True)
        return self

    @model_validator(mode="after")
    def _docker_gpus_agree(self) -> Self:
        """The original's ``docker_gpus`` asks for a number of GPUs; the scheduler picks which."""
        if self.type != "container" or self.params.get("docker_gpus") in (None, ""):
            return self
        asked = docker_gpu_count(self.params["docker_gpus"])
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
        flat = {
            "gpu_count": self.gpu_count,
            "gpu_model": self.gpu_model or self.gpu_type,
            "min_vram_mb": self.min_vram_mb,
            "min_compute_capability": self.min_compute_capability,
            "max_price": self.max_price,
        }
        if self.gpu_model and self.gpu_type and self.gpu_model != self.gpu_type:
            raise ValueError("gpu_type and gpu_model disagree")
        for name, value in flat.items():
            other = native.get(name)
            if value is not None and other is not None and value != other:
                raise ValueError(f"{name} is given twice with different values")
        return self

    def normalized_spec(self) -> dict[str, Any]:
        """One spec shape for the scheduler and daemon, whatever shape the client used."""
        res = self.resources or Resources()
        flat = {
            "gpu_count": self.gpu_count,
            "gpu_model": self.gpu_model or self.gpu_type,
            "min_vram_mb": self.min_vram_mb,
            "min_compute_capability": self.min_compute_capability,
        }
        res = res.model_copy(update={k: v for k, v in flat.items() if v is not None})
        return {
            "type": self.type,
            "name": self.name,
            "description": self.description,
            "params": self.params,
            "resources": res.model_dump(exclude_none=True),
            "priority": self.priority,
            "tags": self.tags,
            "timeout_seconds": self.timeout_seconds,
            "max_retries": self.max_retries,
            "max_price_per_hour": (
                self.max_price_per_hour if self.max_price_per_hour is not None else self.max_price
            ),
            "labels": self.labels,
            "env": self.env,
            "inputs": self.inputs,
            "outputs": self.outputs,
        }
