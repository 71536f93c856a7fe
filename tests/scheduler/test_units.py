"""The job state machine and the matcher's basic choices (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler import placement, states
from shared.contracts import JobState as S


@pytest.mark.parametrize(
    ("frm", "to"),
    [
        (S.QUEUED, S.DISPATCHED),
        (S.DISPATCHED, S.RUNNING),
        (S.RUNNING, S.COMPLETED),
        (S.RUNNING, S.FAILED),
        (S.RUNNING, S.QUEUED),
        (S.QUEUED, S.CANCELLED),
    ],
)
def test_legal_transitions_pass(frm: S, to: S) -> None:
    states.check(frm, to)


@pytest.mark.parametrize(
    ("frm", "to"),
    [
        (S.COMPLETED, S.RUNNING),
        (S.FAILED, S.QUEUED),
        (S.CANCELLED, S.COMPLETED),
        (S.QUEUED, S.RUNNING),
        (S.QUEUED, S.COMPLETED),
        (S.TIMED_OUT, S.QUEUED),
    ],
)
def test_illegal_transitions_are_refused(frm: S, to: S) -> None:
    with pytest.raises(states.IllegalTransition):
        states.check(frm, to)


def _cap(
    pid: str, gpus: list[tuple[str, int]], price: float = 1.0, **kw: object
) -> placement.Capacity:
    return placement.Capacity(
        provider_id=pid,
        price_per_hour=price,
        max_tasks=8,
        gpus=[placement.GpuSlot(i, name, mem) for i, (name, mem) in enumerate(gpus)],
        **kw,  # type: ignore[arg-type]
    )


def test_best_fit_leaves_the_least_capacity_over() -> None:
    big = _cap("big", [("NVIDIA H100 80GB", 81920)] * 8)
    small = _cap("small", [("NVIDIA H100 80GB", 81920)] * 2)
    got = placement.choose(placement.Demand(gpu_count=2, gpu_model="*H100*"), [big, small])
    assert got == placement.Placement("small", [0, 1])


def test_used_indices_are_never_handed_out_twice() -> None:
    cap = _cap("p", [("A100", 40960)] * 4)
    now = datetime.now(UTC)
    first = placement.choose(placement.Demand(gpu_count=3), [cap])
    assert first is not None
    placement.allocate(cap, first, now)
    assert placement.choose(placement.Demand(gpu_count=2), [cap]) is None
    second = placement.choose(placement.Demand(gpu_count=1), [cap])
    assert second is not None and set(second.gpu_indices).isdisjoint(first.gpu_indices)


def test_model_vram_price_and_labels_are_honoured() -> None:
    cheap_small = _cap("a", [("RTX 4090", 24564)], price=0.5, labels={"region": "eu"})
    dear_big = _cap("b", [("H100", 81920)], price=3.0, labels={"region": "us"})
    caps = [cheap_small, dear_big]
    assert placement.choose(placement.Demand(1, min_vram_mb=40000), caps).provider_id == "b"
    assert placement.choose(placement.Demand(1, gpu_model="RTX*"), caps).provider_id == "a"
    assert (
        placement.choose(placement.Demand(1, min_vram_mb=40000, max_price_per_hour=1), caps) is None
    )
    assert placement.choose(placement.Demand(1, labels={"region": "eu"}), caps).provider_id == "a"


def test_a_job_bigger_than_any_host_never_fits() -> None:
    caps = [_cap("p", [("H100", 81920)] * 8)]
    assert not placement.ever_fits(placement.Demand(gpu_count=16), caps)
    assert placement.ever_fits(placement.Demand(gpu_count=8), caps)


def test_zero_gpu_jobs_need_only_a_free_slot() -> None:
    cpu = placement.Capacity("cpu", 0.0, max_tasks=1, gpus=[])
    assert placement.choose(placement.Demand(), [cpu]) == placement.Placement("cpu", [])
    placement.allocate(cpu, placement.Placement("cpu", []), datetime.now(UTC))
    assert placement.choose(placement.Demand(), [cpu]) is None


def test_compute_capability_compares_numerically_and_unknown_never_fits() -> None:
    new = placement.Capacity(
        "new", 1.0, 4, gpus=[placement.GpuSlot(0, "B200", 192000, compute_capability="10.0")]
    )
    old = placement.Capacity(
        "old", 1.0, 4, gpus=[placement.GpuSlot(0, "V100", 16384, compute_capability="7.0")]
    )
    unknown = placement.Capacity("unk", 0.1, 4, gpus=[placement.GpuSlot(0, "X", 99999)])
    want9 = placement.Demand(1, min_compute_capability="9.0")
    assert placement.choose(want9, [old, unknown, new]) == placement.Placement("new", [0])
    assert placement.choose(want9, [old, unknown]) is None
    assert placement.capability("10.0") > placement.capability("9.0")


def test_wait_reason_names_what_is_missing() -> None:
    busy = _cap("busy", [("H100", 81920)], running_tasks=8)
    demand = placement.Demand(1, gpu_model="H100*", max_price_per_hour=2.0)
    assert placement.wait_reason(demand, []) == "waiting: no live provider"
    assert "none free now" in placement.wait_reason(demand, [busy])
    missing = placement.wait_reason(placement.Demand(2, gpu_model="A100*"), [busy])
    assert missing == "waiting: no live provider offers 2 GPU(s), model A100*"


def test_flat_aliases_fold_into_the_native_spec_and_conflicts_are_refused() -> None:
    from pydantic import ValidationError

    from api_gateway.schemas import JobSubmission

    base = {"type": "script", "name": "n", "params": {"script_content": "true"}}
    flat = JobSubmission(
        **base,
        gpu_type="H100*",
        gpu_count=2,
        min_vram_mb=1,
        min_compute_capability="9.0",
        max_price=2.5,
        labels={"region": "eu"},
    ).to_spec()
    native = JobSubmission(
        **base,
        resources={
            "gpu_count": 2,
            "gpu_model": "H100*",
            "min_vram_mb": 1,
            "min_compute_capability": "9.0",
        },
        max_price_per_hour=2.5,
        labels={"region": "eu"},
    ).to_spec()
    assert flat == native
    assert flat.resources.min_compute_capability == "9.0"
    for clash in (
        {"gpu_count": 1, "resources": {"gpu_count": 2}},
        {"max_price": 1.0, "max_price_per_hour": 2.0},
        {"gpu_type": "A100", "gpu_model": "H100"},
    ):
        with pytest.raises(ValidationError):
            JobSubmission(**base, **clash)
