"""Gang (multi-node) placement: N ranks on N distinct providers, all or nothing. Pure, no I/O.

A job with ``resources.nodes = N`` needs ``gpu_count`` GPUs on each of N different hosts at
once (Volcano's ``minMember``, Kueue's all-or-nothing admission, Ray's STRICT_SPREAD placement
group). :func:`place` picks the hosts with the matcher's best-fit order and either returns N
placements or None; the capacities it was given are left exactly as they were either way (the
caller accounts the placements with :func:`placement.allocate` only on success), so a gang that
does not fit leaves no partial hold behind.

Each rank gets :func:`rank_env`: ``DANTE_RANK``, ``DANTE_WORLD_SIZE``, and for
``torchrun --nnodes=$NNODES --node_rank=$NODE_RANK`` the names ``NODE_RANK``/``NNODES``,
``MASTER_ADDR`` (rank 0's advertised address) and ``MASTER_PORT``.
"""

from __future__ import annotations

from scheduler import placement
from shared.contracts import GangRank

DEFAULT_MASTER_PORT = 29500  # torchrun's default


def place(
    matcher: placement.Matcher, demand: placement.Demand, nodes: int
) -> list[placement.Placement] | None:
    """N placements on N distinct providers, best fit first; None if fewer fit now."""
    if nodes < 1:
        return None
    chosen: list[placement.Placement] = []
    saved: dict[str, int] = {}
    by_id = {c.provider_id: c for c in matcher.capacities}
    try:
        for _ in range(nodes):
            pick = matcher.choose(demand)
            if pick is None:
                return None
            chosen.append(pick)
            cap = by_id[pick.provider_id]
            saved[cap.provider_id] = cap.running_tasks
            cap.running_tasks = cap.max_tasks  # hide it from the next rank's choice
    finally:
        for pid, tasks in saved.items():
            by_id[pid].running_tasks = tasks
    return chosen


def rank_env(r: GangRank) -> dict[str, str]:
    return r.env()


def gang_outcome(rank_states: list[str]) -> str | None:
    """What the whole gang does given its ranks' states: ``"requeue"`` when any rank failed,
    timed out or was lost, ``"completed"`` when every rank completed, else None (running)."""
    if any(s in ("failed", "timed_out", "lost", "queued", "cancelled") for s in rank_states):
        return "requeue"
    if rank_states and all(s == "completed" for s in rank_states):
        return "completed"
    return None
