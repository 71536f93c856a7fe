"""Preemption: which running jobs to stop so a higher-priority job fits. Pure, no I/O.

Policy (``DANTE_SCHEDULER_PREEMPTION``):

* ``off`` — never;
* ``same-owner`` — only the preemptor owner's own jobs of lower priority (a user reorders
  their own work);
* ``lower-priority`` — any owner's job of lower priority.

Priority here is the job's own ``priority`` (0..10), not the fair-share effective priority:
being behind on fair share never evicts anyone (Slurm's ``preempt/qos`` likewise preempts on
QOS, not on the multifactor sum). A job is preemptable only after it has run
``min_run_seconds`` (Slurm ``PreemptExemptTime``), so two jobs can never evict each other in
turns (no thrash); a dispatched job not yet running is never a victim.

Cost measure: the GPU-seconds a set of victims would lose (each victim's GPUs, at least 1,
times the seconds it has run: without checkpoints, a requeued attempt starts over), then the
number of victims, then the GPUs they hold. The chosen set is the least by that order among all
sets on one provider that free enough fitting GPUs *and* a task slot; since dropping a victim
never raises any of the three, no chosen victim is superfluous. Victims are all on one host
(a job's GPUs are on one host). Exhaustive over the eligible victims of a host up to
``EXHAUSTIVE_LIMIT`` of them (2^12 subsets), cheapest-per-freed-GPU first above that.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from itertools import combinations
from typing import Literal

from scheduler import placement

Policy = Literal["off", "same-owner", "lower-priority"]
POLICIES: tuple[Policy, ...] = ("off", "same-owner", "lower-priority")
EXHAUSTIVE_LIMIT = 12


@dataclass(frozen=True)
class Running:
    job_id: str
    owner_id: str
    priority: int
    provider_id: str
    gpu_indices: tuple[int, ...]
    started_at: datetime | None  # None: dispatched, not yet running


@dataclass(frozen=True)
class Preemptor:
    owner_id: str
    priority: int
    demand: placement.Demand


@dataclass(frozen=True)
class Plan:
    placement: placement.Placement
    victims: tuple[Running, ...]
    cost: tuple[float, int, int]


def lost_gpu_seconds(victim: Running, now: datetime) -> float:
    if victim.started_at is None:
        return 0.0
    return max(len(victim.gpu_indices), 1) * max((now - victim.started_at).total_seconds(), 0.0)


def cost_of(victims: Iterable[Running], now: datetime) -> tuple[float, int, int]:
    vs = list(victims)
    return (
        sum(lost_gpu_seconds(v, now) for v in vs),
        len(vs),
        sum(len(v.gpu_indices) for v in vs),
    )


def eligible(
    victim: Running, who: Preemptor, policy: Policy, now: datetime, min_run_seconds: float
) -> bool:
    if policy == "off" or victim.started_at is None:
        return False
    if victim.priority >= who.priority:
        return False
    if policy == "same-owner" and victim.owner_id != who.owner_id:
        return False
    return (now - victim.started_at).total_seconds() >= min_run_seconds


def _subsets(victims: list[Running]) -> Iterable[tuple[Running, ...]]:
    for size in range(len(victims) + 1):
        yield from combinations(victims, size)


def plan(
    who: Preemptor,
    capacities: list[placement.Capacity],
    running: list[Running],
    *,
    policy: Policy,
    now: datetime,
    min_run_seconds: float,
) -> Plan | None:
    """The cheapest set of victims (on one host) whose GPUs let ``who`` fit, with where it
    goes then; None if no allowed set does. No victims at all if it fits as things are.
    Capacities are read, never changed."""
    if policy == "off":
        return None
    demand = who.demand
    need = demand.gpu_count
    by_provider: dict[str, list[Running]] = {}
    for r in running:
        if eligible(r, who, policy, now, min_run_seconds):
            by_provider.setdefault(r.provider_id, []).append(r)
    best: Plan | None = None
    for cap, healthy in placement.Matcher(capacities).candidates(demand):
        victims_here = by_provider.get(cap.provider_id, [])
        fitting = {g.index for g in healthy}
        free = fitting - cap.used_indices
        victims_here.sort(key=lambda v: (lost_gpu_seconds(v, now), v.job_id))
        if len(victims_here) <= EXHAUSTIVE_LIMIT:
            options: Iterable[tuple[Running, ...]] = _subsets(victims_here)
        else:  # cheapest first: every prefix is a candidate set
            options = (tuple(victims_here[:n]) for n in range(len(victims_here) + 1))
        for vs in options:
            if cap.running_tasks - len(vs) >= cap.max_tasks:
                continue  # still no task slot
            freed = free | (fitting & {i for v in vs for i in v.gpu_indices})
            if len(freed) < need:
                continue
            cost = cost_of(vs, now)
            if best is not None and (cost, cap.provider_id) >= (
                best.cost,
                best.placement.provider_id,
            ):
                continue
            # the already-free GPUs first, then the victims', smallest first (as the matcher)
            size = {g.index: g.memory_total_mb for g in healthy}
            chosen = sorted(freed, key=lambda i: (i not in free, size[i], i))[:need]
            best = Plan(placement.Placement(cap.provider_id, sorted(chosen)), vs, cost)
    return best
