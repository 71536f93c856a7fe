"""Fair share: a queued job's effective priority. Pure functions, no I/O.

The formula is Slurm's multifactor priority plugin (``priority/multifactor``, see
https://slurm.schedmd.com/priority_multifactor.html), reduced to the three factors this
platform has::

    effective = W_priority  * priority / 10                      (job priority factor, 0..1)
              + W_age       * min(age / max_age, 1)               (age factor, 0..1)
              + W_fairshare * 2 ** (-(U / S))                     (classic fair-share factor, 0..1)

where ``U`` is the owner's share of the *decayed* GPU usage of all owners (0..1) and ``S`` the
owner's normalised share (0..1, shares are relative weights, e.g. 1:1:2 → 0.25:0.25:0.5).
Usage decays with a half-life (Slurm ``PriorityDecayHalfLife``, default 7 days): a GPU-second
used one half-life ago counts half. An owner with no recorded usage has ``F = 1``; one that used
exactly its share has ``F = 0.5``; one that used twice its share ``F = 0.25``.

Jobs are ordered by ``effective`` descending, then by age (FIFO). Weights are configurable
(``DANTE_SCHEDULER_FAIRSHARE_*``); the defaults make one priority step (1/10 of W_priority =
1,000) worth ten times more than being a week old, and a fair-share swing from "unused" to
"used its whole share" (5,000) worth five priority steps, so the priority a user chose still
wins over fairness between tenants, but fairness wins within a priority band.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

MAX_PRIORITY = 10


@dataclass(frozen=True)
class FairShareConfig:
    weight_priority: float = 10_000.0
    weight_age: float = 100.0
    weight_fairshare: float = 10_000.0
    max_age_seconds: float = 7 * 86_400.0  # Slurm PriorityMaxAge
    half_life_seconds: float = 7 * 86_400.0  # Slurm PriorityDecayHalfLife
    default_share: float = 1.0
    shares: Mapping[str, float] = field(default_factory=dict)

    def share_of(self, owner: str) -> float:
        return max(self.shares.get(owner, self.default_share), 0.0)


def decay(value: float, elapsed_seconds: float, half_life_seconds: float) -> float:
    """``value`` after ``elapsed_seconds`` of exponential decay with the given half-life."""
    if half_life_seconds <= 0:
        return 0.0
    return value * math.pow(2.0, -max(elapsed_seconds, 0.0) / half_life_seconds)


def add_usage(
    decayed: float, as_of: datetime, gpu_seconds: float, now: datetime, half_life: float
) -> float:
    """The running decayed total (as of ``as_of``) brought to ``now`` plus new usage."""
    return decay(decayed, (now - as_of).total_seconds(), half_life) + max(gpu_seconds, 0.0)


def fairshare_factors(
    usage: Mapping[str, float], owners: set[str] | frozenset[str], cfg: FairShareConfig
) -> dict[str, float]:
    """``F = 2^(-U/S)`` for each owner in ``owners`` (and everyone with usage).

    ``usage`` is decayed GPU-seconds per owner (in-flight work included by the caller). Shares
    are normalised over the owners that are *active* (have usage or a queued job), as Slurm
    normalises over siblings in the association tree.
    """
    everyone = set(owners) | {o for o, u in usage.items() if u > 0}
    total_share = sum(cfg.share_of(o) for o in everyone)
    total_usage = sum(max(usage.get(o, 0.0), 0.0) for o in everyone)
    out: dict[str, float] = {}
    for owner in everyone:
        s = cfg.share_of(owner) / total_share if total_share > 0 else 0.0
        u = max(usage.get(owner, 0.0), 0.0) / total_usage if total_usage > 0 else 0.0
        if u == 0:
            out[owner] = 1.0
        elif s == 0:
            out[owner] = 0.0
        else:
            out[owner] = math.pow(2.0, -u / s)
    return out


def effective_priority(
    priority: int, age_seconds: float, fairshare: float, cfg: FairShareConfig
) -> float:
    """The multifactor sum above (higher goes first)."""
    age = min(max(age_seconds, 0.0) / cfg.max_age_seconds, 1.0) if cfg.max_age_seconds > 0 else 1.0
    return (
        cfg.weight_priority * min(max(priority, 0), MAX_PRIORITY) / MAX_PRIORITY
        + cfg.weight_age * age
        + cfg.weight_fairshare * min(max(fairshare, 0.0), 1.0)
    )


def explain(priority: int, age_seconds: float, fairshare: float, cfg: FairShareConfig) -> str:
    """The factors in words, for ``waiting_reason``."""
    eff = effective_priority(priority, age_seconds, fairshare, cfg)
    return f"effective priority {eff:.0f} (priority {priority}, fair-share {fairshare:.2f})"


@dataclass(frozen=True)
class Ranked:
    key: str
    owner: str
    priority: int
    submitted_at: datetime


def order(
    items: list[Ranked],
    usage: Mapping[str, float],
    now: datetime,
    cfg: FairShareConfig,
) -> list[tuple[Ranked, float, float]]:
    """Items with (effective priority, fair-share factor), best first; ties go FIFO."""
    factors = fairshare_factors(usage, {i.owner for i in items}, cfg)
    scored = [
        (
            i,
            effective_priority(
                i.priority, (now - i.submitted_at).total_seconds(), factors[i.owner], cfg
            ),
            factors[i.owner],
        )
        for i in items
    ]
    scored.sort(key=lambda t: (-t[1], t[0].submitted_at, t[0].key))
    return scored
