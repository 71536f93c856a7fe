"""One placement round: queued jobs onto live providers, their I/O presigned, tasks published.

Runs inside one transaction. On PostgreSQL the caller holds the placement advisory lock (see
``workers.py``) and the queued rows are claimed ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
import structlog

from scheduler import gang_dispatch, placement, policy_store
from scheduler.billing import BillingUnavailable, HttpBilling, InsufficientFunds
from scheduler.errors import MissingInput, StorageUnavailable
from scheduler.models import Job, ProviderView
from scheduler.repository import JobRepository
from scheduler.service import SchedulerService
from shared.contracts import (
    GangRank,
    GpuInfo,
    JobSpec,
    JobState,
    TaskDispatch,
    TaskObject,
    log_key,
    task_subject,
)
from shared.db import utcnow
from shared.nats import publish

log = structlog.get_logger(__name__)
SPEC_CACHE = 50_000
"""Validated job specs a scheduler keeps between rounds (oldest dropped first)."""
PUBLISH_WINDOW = 256
"""Dispatch publishes awaiting their JetStream ack at once after a round's commit."""


class Presigned(Protocol):
    @property
    def inputs(self) -> dict[str, str]: ...

    @property
    def outputs(self) -> dict[str, str]: ...


class Presigner(Protocol):
    async def presign(self, owner: str, inputs: list[str], outputs: list[str]) -> Presigned: ...


def demand_of(job: Job, spec: JobSpec) -> placement.Demand:
    return placement.Demand(
        gpu_count=job.gpu_count,
        gpu_model=job.requested_gpu_model,
        min_vram_mb=job.min_vram_mb,
        max_price_per_hour=job.max_price_per_hour,
        labels=dict(spec.labels),
        min_compute_capability=job.min_compute_capability,
        cpu=spec.resources.cpu,
        memory_mb=spec.resources.memory_mb,
        container=spec.type == "container",
    )


def _slot(stored: dict[str, Any]) -> placement.GpuSlot:
    # ``model_construct``: the view holds what a validated ProviderEvent carried, and a round
    # reads ~8,000 of these with 1,000 hosts (validation would cost more than the matching)
    g = GpuInfo.model_construct(**stored)
    return placement.GpuSlot(
        index=g.index,
        name=g.name,
        memory_total_mb=g.memory_total_mb,
        healthy=g.healthy,
        compute_capability=g.compute_capability,
    )


def capacity_of(view: ProviderView | Any) -> placement.Capacity:
    """From a provider view (or a plain row with the same columns)."""
    return placement.Capacity(
        provider_id=view.id,
        price_per_hour=view.price_per_hour,
        max_tasks=view.max_concurrent_tasks,
        labels=dict(view.labels or {}),
        gpus=[_slot(g) for g in view.gpus or []],
        last_placed_at=view.last_placed_at,
        cpu_count=view.cpu_count or 0,
        memory_mb=view.memory_mb or 0,
        docker=bool(view.docker),
    )


class ActiveRows:
    """The active attempts' rows (``JobRepository.active``) kept between rounds, each keyed by
    its job's ``version``, which every write of the job bumps (``version_id_col``, on any
    replica). A round reads only ``(id, version)`` of the active attempts and the full rows of
    those whose version moved: with 1,000 running jobs that read cost a round ~4 ms of result
    decoding (JSON GPU indices, dates) on the 2-core VM, the version read ~1 ms. The rows are
    the database's, never the round's own guesses: what is *taken* is still read every round."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[int, Any]] = {}

    async def read(self, jobs: JobRepository) -> Sequence[Any]:
        current = await jobs.active_versions()
        rows = self._rows
        stale = [r.id for r in current if rows.get(r.id, (None,))[0] != r.version]
        for start in range(0, len(stale), 1000):
            chunk = stale[start : start + 1000]
            fresh = {r.id: r for r in await jobs.active(chunk)}
            for job_id in chunk:
                if (row := fresh.get(job_id)) is not None:
                    rows[job_id] = (row.version, row)
                else:  # no longer active since the version read: not taken (its row is gone)
                    rows.pop(job_id, None)
        if len(rows) > len(current):
            ids = {r.id for r in current}
            for job_id in [j for j in rows if j not in ids]:
                del rows[job_id]
        return [entry[1] for r in current if (entry := rows.get(r.id)) is not None]


class HardwareCache:
    """Each live provider's parsed hardware (price, task slots, labels, GPUs) kept between
    rounds, keyed by its row's ``version`` (bumped on every applied provider event, by any
    replica). A round reads only ``(id, version, last_placed_at)`` of the live providers and
    the full rows of those whose version moved, so its fixed cost no longer parses every
    host's GPU list. What is *taken* is never cached: it is read from the jobs every round."""

    def __init__(self) -> None:
        self._static: dict[str, tuple[int, placement.Capacity]] = {}
        self.fits = placement.StaticFits()  # each host's fit per demand shape, between rounds
        # job id → its validated spec (a spec never changes): a job waiting through many
        # rounds is validated once, not once per round
        self._specs: dict[str, JobSpec] = {}
        self.active = ActiveRows()  # the round's other fixed read, kept the same way

    def spec_of(self, job: Job) -> JobSpec:
        spec = self._specs.get(job.id)
        if spec is None:
            spec = job.job_spec
            self.remember(job.id, spec)
        return spec

    def has_spec(self, job_id: str) -> bool:
        return job_id in self._specs

    def remember(self, job_id: str, spec: JobSpec) -> None:
        """Keep a job's validated spec: intake hands over the one its submission carried, so
        a job stored by this replica is not validated again when it is placed (issue 12)."""
        if job_id in self._specs:
            return
        if len(self._specs) >= SPEC_CACHE:
            self._specs.pop(next(iter(self._specs)))
        self._specs[job_id] = spec

    async def _refresh(self, svc: SchedulerService, rows: Sequence[Any]) -> None:
        """Re-read the full rows of the providers among ``rows`` whose version moved."""
        stale = [r.id for r in rows if self._static.get(r.id, (None,))[0] != r.version]
        for start in range(0, len(stale), 1000):
            for full in await svc.providers.rows_of(stale[start : start + 1000]):
                self._static[full.id] = (full.version, capacity_of(full))

    async def known(self, svc: SchedulerService) -> list[placement.Capacity]:
        """Every provider the scheduler knows, offline ones too (can a job *ever* fit?), from
        the same cache: rebuilding 8,000 GPU slots each round a job waited was ~6 % of a
        burst's CPU at 1,000 hosts (issue 12). Forgets providers whose rows are gone."""
        rows = await svc.providers.known_versions()
        await self._refresh(svc, rows)
        if len(self._static) > len(rows):
            ids = {r.id for r in rows}
            gone = [p for p in self._static if p not in ids]
            for pid in gone:
                del self._static[pid]
            self.fits.forget(gone)
        return [self._static[r.id][1] for r in rows if r.id in self._static]

    async def live(self, svc: SchedulerService) -> dict[str, placement.Capacity]:
        rows = await svc.providers.live_versions()
        await self._refresh(svc, rows)
        caps: dict[str, placement.Capacity] = {}
        for r in rows:
            entry = self._static.get(r.id)
            if entry is None:
                continue  # deleted between the two reads
            caps[r.id] = entry[1].for_round(r.last_placed_at)
        return caps


class Placer:
    def __init__(
        self,
        service: SchedulerService,
        presigner: Presigner | None = None,
        billing: HttpBilling | None = None,
        hardware: HardwareCache | None = None,
    ) -> None:
        self.svc = service
        self.hardware = hardware
        self.presigner = presigner
        self.billing = billing
        self._storage_down: str | None = None
        self._billing_down: str | None = None
        self._outgoing: list[TaskDispatch] = []
        self.rules: policy_store.RoundPolicies | None = None

    async def _wait(self, job: Job, reason: str) -> None:
        """Say why the job waits, once per distinct reason (not once per round); the shown
        reason ends with the job's effective priority (issue 17)."""
        shown = reason
        if self.rules is not None and (why := self.rules.explain(job)):
            shown = f"{reason}; {why}"
        before = (job.wait_reason or "").split("; effective priority")[0]
        if job.wait_reason != shown[:255]:
            job.wait_reason = shown[:255]
        if before != reason[:255].split("; effective priority")[0]:
            await self.svc.note(job, reason)

    async def place(self, limit: int = 200) -> int:
        """Queued jobs in priority/FIFO order; a job that cannot go now lets smaller ones by."""
        svc = self.svc
        now = utcnow()
        queued = await svc.jobs.queued(limit)
        if not queued:
            return 0
        svc.jobs.collect_events()  # written with the round's jobs at the end
        if self.hardware is not None:
            caps = await self.hardware.live(svc)
        else:  # plain rows, not ORM objects: with 1,000 hosts a small round's main cost
            caps = {r.id: capacity_of(r) for r in await svc.providers.live_rows()}
        if self.hardware is not None:
            active = await self.hardware.active.read(svc.jobs)
        else:
            active = await svc.jobs.active()
        have: dict[str, set[int]] = {}  # each host's GPU indices
        for r in active:
            if (cap := caps.get(r.provider_id)) is not None:
                cap.running_tasks += 1
                # a GPU that has since left the host's inventory is not capacity either way
                if r.gpu_indices:
                    on_host = have.get(r.provider_id)
                    if on_host is None:
                        on_host = have[r.provider_id] = {g.index for g in cap.gpus}
                    cap.used_indices.update(i for i in r.gpu_indices if i in on_host)
                cap.used_cpu += r.cpu or 0.0
                cap.used_memory_mb += r.memory_mb or 0
        # --- issue 17: cordoned hosts take no work; fair-share order; quotas; preemption ---
        for pid, indices in await policy_store.gang_allocations(svc.uow.session):
            if pid in caps:  # a gang's other ranks hold GPUs too
                caps[pid].running_tasks += 1
                caps[pid].used_indices.update(indices)
        for pid in await policy_store.cordoned_ids(svc.uow.session):
            caps.pop(pid, None)
        rules = self.rules = await policy_store.RoundPolicies.load(
            svc.uow.session, svc.settings, now, active
        )
        queued += await policy_store.queued_per_owner(
            svc.uow.session, svc.settings.fairshare_per_owner, {j.id for j in queued}, limit
        )
        await svc.jobs.load_specs([j for j in queued if self._lacks_spec(j)])
        queued = rules.order(queued)  # after the last query: nothing flushed before the end
        used: set[str] = set()
        # nothing is flushed mid-round: a query in the loop would otherwise write each
        # changed job by the ORM; they are written at the end, in bulk
        with svc.uow.session.no_autoflush:
            placed = await self._match_all(queued, caps, rules, now, used)
        for job in queued:  # all read FOR UPDATE: one UPDATE per kind of change, not per job
            svc.jobs.stage(job)
        await svc.jobs.write_staged()
        await svc.providers.mark_placed(sorted(used), now)  # least-recently-used tie-break
        return placed

    async def _match_all(
        self,
        queued: list[Job],
        caps: dict[str, placement.Capacity],
        rules: policy_store.RoundPolicies,
        now: datetime,
        used: set[str],
    ) -> int:
        """Each job in the round's order: placed, failed (it can never fit), or left waiting
        with its reason; a job that cannot go now lets smaller ones by. Adds the hosts it
        placed on to ``used``; returns how many were placed."""
        svc = self.svc
        known: list[placement.Capacity] | None = None
        fits = self.hardware.fits if self.hardware is not None else None
        matcher = placement.Matcher(list(caps.values()), fits)
        placed = 0
        # Shapes that found no host this round, and why: capacity only shrinks within a
        # round, so a later job of the same shape cannot fit either (no O(hosts) scan each).
        full: dict[tuple, str | None] = {}
        for job in queued:
            spec = self.hardware.spec_of(job) if self.hardware is not None else job.job_spec
            demand = demand_of(job, spec)
            if over := rules.over_quota(job):
                await self._wait(job, over)
                continue
            if (spec.resources.nodes or 1) > 1:  # a gang: all ranks or none
                if await gang_dispatch.place_gang(self, job, spec, demand, matcher, caps, now):
                    rules.placed(job)
                    used.update(r["provider_id"] for r in job.gang or [])
                    placed += 1
                continue
            shape = placement.shape_of(demand)
            choice = None if shape in full else matcher.choose(demand)
            plan = rules.plan(job, demand, list(caps.values())) if choice is None else None
            if plan is not None:
                choice = plan.placement
            if choice is None:
                if shape not in full:
                    if known is None:  # only needed when something does not fit now
                        known = await self._known()
                    full[shape] = (
                        None
                        if known and not placement.ever_fits(demand, known)
                        else placement.wait_reason(demand, list(caps.values()))
                    )
                reason = full[shape]
                if reason is None:
                    job.error = placement.never_fits_reason(demand, known or [])
                    await svc.transition(job, JobState.FAILED, job.error)
                else:
                    await self._wait(job, reason)
                continue
            if not await self._hold(job, caps[choice.provider_id].price_per_hour):
                continue
            try:
                io = await self._presign(job, spec)
            except MissingInput as exc:
                job.error = str(exc)
                await svc.transition(job, JobState.FAILED, job.error)
                continue
            except StorageUnavailable as exc:
                await self._wait(job, f"waiting: storage unavailable for its inputs/outputs: {exc}")
                continue
            cap = caps[choice.provider_id]
            if plan is not None and not await rules.evict(svc, plan, job, cap):
                await self._wait(job, "waiting: a job to preempt ended meanwhile")
                continue
            rules.placed(job)
            placement.allocate(cap, choice, now)
            placement.hold_host(cap, demand)
            used.add(cap.provider_id)
            job.provider_id = choice.provider_id
            job.gpu_indices = choice.gpu_indices
            job.price_per_hour = cap.price_per_hour
            job.gpu_name = self._gpu_name(cap, choice.gpu_indices)
            await svc.transition(job, JobState.DISPATCHED, f"placed on {choice.provider_id}")
            self._dispatch_after_commit(job, spec, io)
            placed += 1
        return placed

    def _lacks_spec(self, job: Job) -> bool:
        """Its spec was not read (``JobRepository.queued``) and is not cached either."""
        if self.hardware is not None and self.hardware.has_spec(job.id):
            return False
        return "spec" in sa.inspect(job).unloaded

    async def _known(self) -> list[placement.Capacity]:
        if self.hardware is not None:
            return await self.hardware.known(self.svc)
        return [capacity_of(v) for v in await self.svc.providers.all_known()]

    async def _hold(self, job: Job, price_per_hour: float | None, units: int | None = None) -> bool:
        """Funds held for this attempt (or billing not in use); else the job waits, saying why.
        ``units``: GPUs billed, when not the job's own count (a gang's CPU-only ranks)."""
        if self.billing is None:
            return True
        if self._billing_down is None:
            try:
                await self.billing.hold(job, price_per_hour, units)
                return True
            except InsufficientFunds as exc:
                await self._wait(job, str(exc))
                return False
            except BillingUnavailable as exc:
                self._billing_down = str(exc)  # one failure per round, not one timeout per job
                log.warning("dispatch.billing_unavailable", job_id=job.id, error=str(exc))
        await self._wait(job, f"waiting: billing unavailable ({self._billing_down})")
        return False

    @staticmethod
    def _gpu_name(cap: placement.Capacity, indices: list[int]) -> str | None:
        names = sorted({g.name for g in cap.gpus if g.index in indices})
        return "+".join(names)[:128] if names else None

    async def _presign(
        self, job: Job, spec: JobSpec
    ) -> tuple[list[TaskObject], list[TaskObject], TaskObject | None]:
        """URLs for the job's inputs, outputs and log. Storage down: a job with declared I/O
        waits; a job without any still runs (its log stays on the LOGS stream)."""
        inputs, outputs = list(spec.inputs), list(spec.outputs)
        needs_io = bool(inputs or outputs)
        if self.presigner is None or self._storage_down:
            if needs_io:
                raise StorageUnavailable(self._storage_down or "no storage configured")
            return [], [], None
        log_name = log_key(job.id, job.attempt)
        try:
            got = await self.presigner.presign(job.owner_id, inputs, [*outputs, log_name])
        except StorageUnavailable as exc:
            self._storage_down = str(exc)  # one failure per round, not one timeout per job
            log.warning("dispatch.storage_unavailable", job_id=job.id, error=str(exc))
            if needs_io:
                raise
            return [], [], None
        return (
            [TaskObject(key=k, url=got.inputs[k]) for k in inputs],
            [TaskObject(key=k, url=got.outputs[k]) for k in outputs],
            TaskObject(key=log_name, url=got.outputs[log_name]),
        )

    def _dispatch_after_commit(
        self,
        job: Job,
        spec: JobSpec,
        io: tuple[list[TaskObject], list[TaskObject], TaskObject | None],
        *,
        rank: GangRank | None = None,
        provider_id: str | None = None,
        gpu_indices: list[int] | None = None,
    ) -> None:
        """The task for the job's host (or, for a gang, for one ``rank`` on its host)."""
        inputs, outputs, log_upload = io
        task = TaskDispatch(
            job_id=job.id,
            attempt=job.attempt,
            provider_id=provider_id or job.provider_id or "",
            type=spec.type,
            name=job.name,
            spec=spec,
            gang=rank,
            gpu_indices=list(job.gpu_indices if gpu_indices is None else gpu_indices),
            timeout_seconds=job.timeout_seconds,
            correlation_id=job.correlation_id,
            start_deadline=job.start_deadline,
            inputs=inputs,
            outputs=outputs,
            log_upload=log_upload,
        )
        if not self._outgoing:
            self.svc.uow.after_commit(self._send_all)
        self._outgoing.append(task)

    async def _send_all(self) -> None:
        """Publish the round's dispatches pipelined (a window of acks in flight at once)."""
        tasks, self._outgoing = self._outgoing, []
        for start in range(0, len(tasks), PUBLISH_WINDOW):
            await asyncio.gather(*(self._send(t) for t in tasks[start : start + PUBLISH_WINDOW]))

    async def _send(self, task: TaskDispatch) -> None:
        # Lost if the process dies here or NATS is down: the job is dispatched in the
        # database, and its start deadline requeues it (attempt + 1), so nothing is stranded.
        # A gang's ranks > 0 get their own message id (else JetStream drops them as repeats).
        suffix = f":r{task.gang.rank}" if task.gang is not None and task.gang.rank else ""
        try:
            await publish(
                self.svc.js,
                task_subject(task.provider_id),
                task,
                msg_id=f"{task.job_id}:{task.attempt}{suffix}",
                correlation_id=task.correlation_id,
            )
        except Exception as exc:
            log.warning("job.dispatch_publish_failed", job_id=task.job_id, error=str(exc))
            return
        log.info(
            "job.dispatched",
            job_id=task.job_id,
            provider_id=task.provider_id,
            attempt=task.attempt,
            correlation_id=task.correlation_id,
        )
