"""Per-owner quotas: concurrent GPUs and GPU-hours per rolling period. Pure, no I/O.

Admission is checked when a job would be placed (as Kueue admits a workload against its
ClusterQueue's quota, and Slurm's ``GrpTRES``/``GrpTRESMins`` hold a job pending):

* concurrent GPUs: GPUs of the owner's dispatched/running jobs + this job's ≤ ``max_gpus``;
* GPU-hours: GPU-seconds the owner used in the last ``period_seconds`` (ended attempts and
  the part of running attempts inside the window) + what this job may use ≤ the limit. What it
  may use is ``gpus * timeout`` when the job has a timeout (so the limit can never be crossed,
  like Slurm with a time limit); without one, the job is admitted while the owner is still under
  the limit (the running job may then cross it; it is not killed).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quota:
    max_gpus: int | None = None
    max_gpu_hours: float | None = None
    period_seconds: int = 30 * 86_400


@dataclass
class OwnerUse:
    gpus_in_use: int = 0
    gpu_seconds_in_period: float = 0.0


@dataclass(frozen=True)
class Ask:
    gpus: int
    timeout_seconds: int | None = None

    @property
    def max_gpu_seconds(self) -> float | None:
        return None if self.timeout_seconds is None else float(self.gpus * self.timeout_seconds)


def over_quota(quota: Quota | None, use: OwnerUse, ask: Ask) -> str | None:
    """Why this ask must wait, or None if it fits the owner's quota."""
    if quota is None:
        return None
    if quota.max_gpus is not None and use.gpus_in_use + ask.gpus > quota.max_gpus:
        return (
            f"waiting: over quota, {use.gpus_in_use} of {quota.max_gpus} concurrent GPU(s) "
            f"in use, this job needs {ask.gpus}"
        )
    if quota.max_gpu_hours is not None and ask.gpus > 0:
        limit = quota.max_gpu_hours * 3600.0
        used = use.gpu_seconds_in_period
        more = ask.max_gpu_seconds
        if used >= limit or (more is not None and used + more > limit):
            return (
                f"waiting: over quota, {used / 3600:.2f} of {quota.max_gpu_hours:g} GPU-hour(s) "
                f"used in the last {quota.period_seconds // 3600} h"
            )
    return None


def take(use: OwnerUse, ask: Ask) -> None:
    """Account an admitted ask, so the next job of the same owner in this round sees it."""
    use.gpus_in_use += ask.gpus
    if ask.max_gpu_seconds is not None:
        use.gpu_seconds_in_period += ask.max_gpu_seconds
