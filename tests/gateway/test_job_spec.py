"""The submission schema folds the original's container fields into the native spec."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from api_gateway.schemas import JobSubmission


def _container(**extra: Any) -> JobSubmission:
    params = {"docker_image": "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime"}
    params.update(extra.pop("params", {}))
    return JobSubmission(type="container", name="train", params=params, **extra)


@pytest.mark.parametrize(
    ("docker_gpus", "count"),
    [(2, 2), ("2", 2), ("0,1,2", 3), ("device=0,1", 2), ('"device=3,5"', 2), (0, 0)],
)
def test_docker_gpus_asks_for_that_many_gpus(docker_gpus: Any, count: int) -> None:
    spec = _container(params={"docker_gpus": docker_gpus}).to_spec()
    assert spec.resources.gpu_count == count
    assert spec.container.docker_gpus == docker_gpus  # the daemon still sees what was asked


def test_docker_gpus_all_needs_a_count() -> None:
    with pytest.raises(ValidationError, match="say how many with gpu_count"):
        _container(params={"docker_gpus": "all"})
    spec = _container(params={"docker_gpus": "all"}, gpu_count=4).to_spec()
    assert spec.resources.gpu_count == 4


@pytest.mark.parametrize(
    "extra",
    [
        {"params": {"docker_gpus": 2}, "gpu_count": 4},
        {"params": {"docker_gpus": "0,1"}, "resources": {"gpu_count": 1}},
        {"params": {"docker_gpus": "0,,1"}},
        {"params": {"docker_gpus": 65}},
    ],
)
def test_contradictory_or_malformed_docker_gpus_are_refused(extra: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _container(**extra)


def test_agreeing_counts_are_accepted() -> None:
    spec = _container(params={"docker_gpus": "0,1"}, resources={"gpu_count": 2}).to_spec()
    assert spec.resources.gpu_count == 2


@pytest.mark.parametrize("key", ["../x", "/abs", "a/../b", "a/./b", "a//b", "a b", "é", ""])
def test_io_keys_must_stay_inside_the_namespace(key: str) -> None:
    with pytest.raises(ValidationError):
        JobSubmission(type="script", name="a", params={"script_content": "x"}, inputs=[key])
    with pytest.raises(ValidationError):
        JobSubmission(type="script", name="a", params={"script_content": "x"}, outputs=[key])


def test_io_keys_are_carried_to_the_spec() -> None:
    job = JobSubmission(
        type="script",
        name="a",
        params={"script_content": "x"},
        inputs=["data/train.csv"],
        outputs=["models/v1.pt"],
    )
    assert job.to_spec().inputs == ["data/train.csv"]
    assert job.to_spec().outputs == ["models/v1.pt"]
