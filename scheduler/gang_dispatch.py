"""Gang jobs in the round and in status handling (issue 17); the choice itself is ``gang.py``.

A gang job is one job row; its ranks live in ``Job.gang`` (rank 0 also in ``provider_id`` /
``gpu_indices``). Placement is all-or-nothing (``gang.place``); each rank gets its own task
message (``Nats-Msg-Id`` ``<job>:<attempt>`` for rank 0, ``<job>:<attempt>:r<n>`` for the
others) carrying its :class:`GangRank`. The job is ``running`` once every rank is, and
``completed`` once every rank completed (exit code 0). Any rank that fails, times out or is
handed back, or whose provider goes offline, stops every rank and requeues the gang as one
attempt (``max_retries`` as for any job); when retries are spent the job fails with that rank's
exit code.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from scheduler import gang, placement
from shared.contracts import GangRank, JobSpec, JobState, TaskStatus

if TYPE_CHECKING:
    from scheduler.dispatch import Placer
    from scheduler.models import Job
    from scheduler.service import SchedulerService

log = structlog.get_logger(__name__)
ADDRESS_LABEL = "address"
"""The label a daemon advertises its reachable address with (``DANTE_DAEMON_LABELS``); rank 0's
becomes ``MASTER_ADDR``. Without it the address is ``127.0.0.1`` (a one-machine cluster)."""


async def place_gang(
    placer: Placer,
    job: Job,
    spec: JobSpec,
    demand: placement.Demand,
    matcher: placement.Matcher,
    caps: dict[str, placement.Capacity],
    now: datetime,
) -> bool:
    """Place all ranks or none; True if placed (and dispatched after commit)."""
    nodes = spec.resources.nodes or 1
    per_node = replace(demand, gpu_count=spec.resources.gpu_count)
    got = gang.place(matcher, per_node, nodes)
    if got is None:
        able = sum(
            1
            for c in caps.values()
            if c.running_tasks < c.max_tasks and placement.choose(per_node, [c]) is not None
        )
        await placer._wait(
            job,
            f"waiting: gang of {nodes} needs {nodes} hosts with {placement.describe(per_node)}, "
            f"{able} can take a rank now",
        )
        return False
    first = caps[got[0].provider_id]
    # each rank is charged at its host's price (scheduler/billing.py): hold at the dearest
    dearest = max((caps[p.provider_id].price_per_hour or 0.0) for p in got)
    if not await placer._hold(job, dearest, units=nodes * max(spec.resources.gpu_count, 1)):
        return False
    try:
        io = await placer._presign(job, spec)
    except Exception as exc:  # storage down or an input missing: the gang waits, holds none
        await placer._wait(job, f"waiting: {exc}")
        return False
    master = first.labels.get(ADDRESS_LABEL, "127.0.0.1")
    ranks: list[dict[str, Any]] = []
    for i, p in enumerate(got):
        placement.allocate(caps[p.provider_id], p, now)
        ranks.append(
            {
                "rank": i,
                "provider_id": p.provider_id,
                "gpu_indices": list(p.gpu_indices),
                "price_per_hour": caps[p.provider_id].price_per_hour,
                "state": JobState.DISPATCHED.value,
                "exit_code": None,
            }
        )
    job.provider_id = got[0].provider_id
    job.gpu_indices = got[0].gpu_indices
    job.price_per_hour = first.price_per_hour
    job.gpu_name = placer._gpu_name(first, got[0].gpu_indices)
    job.gang = ranks
    hosts = ", ".join(p.provider_id for p in got)
    await placer.svc.transition(job, JobState.DISPATCHED, f"gang placed on {hosts}"[:255])
    for i, p in enumerate(got):
        rank = GangRank(rank=i, world_size=nodes, master_addr=master)
        placer._dispatch_after_commit(
            job, spec, io, rank=rank, provider_id=p.provider_id, gpu_indices=p.gpu_indices
        )
    return True


async def apply_rank_status(svc: SchedulerService, job: Job, st: TaskStatus) -> None:
    """One rank's report; the gang moves as one (see the module's docstring)."""
    ranks = [dict(r) for r in job.gang or []]
    mine = next((r for r in ranks if r["provider_id"] == st.provider_id), None)
    if mine is None or st.attempt != job.attempt:
        log.warning("status.rejected", job_id=job.id, reason="not a rank of this attempt")
        return
    if JobState(job.state).terminal or mine["state"] == st.state:
        return
    if mine["state"] in (JobState.COMPLETED, JobState.FAILED, JobState.TIMED_OUT):
        return  # the rank has ended already
    mine["state"] = st.state.value
    mine["exit_code"] = st.exit_code
    job.gang = ranks  # a new list: the JSON column sees the change
    outcome = gang.gang_outcome([r["state"] for r in ranks])
    if outcome == "requeue":
        job.exit_code = st.exit_code
        job.error = st.error or f"rank {mine['rank']} {st.state} (exit {st.exit_code})"
        await svc._requeue_or_fail(
            job,
            f"gang rank {mine['rank']} on {st.provider_id} {st.state}; every rank stopped",
            cancel_old=True,
        )
        return
    if outcome == "completed":
        job.exit_code = 0
        job.error = None
        await svc.transition(job, JobState.COMPLETED, "every gang rank completed")
        return
    if job.state == JobState.DISPATCHED and all(
        r["state"] in (JobState.RUNNING, JobState.COMPLETED) for r in ranks
    ):
        await svc.transition(job, JobState.RUNNING, "every gang rank running")
