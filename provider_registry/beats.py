"""Heartbeats absorbed in batches with Core statements (issue 12).

One call stores any number of beats in the caller's transaction with a handful of statements:
the beating providers and their GPUs read in two queries (locked, in id order, so two replicas
never deadlock), one UPDATE of their heartbeat time, one UPDATE for those coming back online,
one executemany for GPU rows whose health or metrics changed, one INSERT of the outbox rows.
The attempts the beats list go out together, one :class:`AttemptsHeld` row per batch (per
:data:`HELD_PER_ROW` entries), not one event per beat: an event per beat was half the
registry's CPU per listing beat and most of the scheduler's.
No ORM object is built per beat: loading, tracking and flushing a provider and its 8 GPUs was
~40 % of the registry's CPU per beat. The HTTP endpoint and the NATS intake
(provider_registry/beat_intake.py) both come through here, so a beat means the same either way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from provider_registry.models import Gpu, Provider, ProviderEventOutbox
from provider_registry.schemas import AttemptIn, HeartbeatIn, ProviderStatus
from shared.contracts import (
    AttemptRef,
    AttemptsHeld,
    GpuInfo,
    ProviderEvent,
    provider_event_subject,
)
from shared.db import utcnow

log = structlog.get_logger(__name__)

providers_t = cast(sa.Table, Provider.__table__)
gpus_t = cast(sa.Table, Gpu.__table__)
outbox_t = cast(sa.Table, ProviderEventOutbox.__table__)

GPU_FIELDS = tuple(GpuInfo.model_fields)

HELD_KIND = AttemptsHeld.model_fields["kind"].default
HELD_SUBJECT = provider_event_subject(HELD_KIND)
HELD_PER_ROW = 4000
"""Providers plus attempts per :class:`AttemptsHeld` row: ~200 KB of JSON at most, well under
NATS's 1 MB message limit (a beat lists up to ``MAX_HELD_ATTEMPTS``)."""

_GPU_CHANGE = (
    sa.update(gpus_t)
    .where(gpus_t.c.provider_id == sa.bindparam("b_provider"))
    .where(gpus_t.c.index == sa.bindparam("b_index"))
    .values(
        healthy=sa.bindparam("b_healthy", type_=gpus_t.c.healthy.type),
        metrics=sa.bindparam("b_metrics", type_=gpus_t.c.metrics.type),
    )
)


class BeatResult(StrEnum):
    STORED = "stored"
    NOT_REGISTERED = "not_registered"


@dataclass
class Announcer:
    """When each provider's last plain heartbeat event was written (monotonic), per replica: a
    beat that lists no attempts and changes nothing is announced once per ``every`` seconds."""

    every: float = 0.0
    last: dict[str, float] = field(default_factory=dict)

    def mark(self, provider_id: str) -> None:
        self.last[provider_id] = time.monotonic()

    def due(self, provider_id: str) -> bool:
        last = self.last.get(provider_id)
        return last is None or time.monotonic() - last >= self.every


def event_of(
    kind: str,
    provider: Mapping[str, Any],
    gpus: Sequence[Mapping[str, Any]],
    attempts: list[AttemptIn] | None,
    at: datetime,
) -> ProviderEvent:
    """The event for one provider from its row and GPU rows. ``attempts``: what the daemon's
    beat or registration said it holds, passed on as is for the scheduler to reconcile its jobs
    against (None: this event says nothing about them)."""
    held = None if attempts is None else [AttemptRef(**a.model_dump()) for a in attempts]
    return ProviderEvent(
        kind=kind,  # type: ignore[arg-type]
        provider_id=provider["id"],
        owner_id=provider["owner_id"],
        status=provider["status"],
        at=at,
        max_concurrent_tasks=provider["max_concurrent_tasks"],
        price_per_hour=provider["price_per_hour"],
        cpu_count=provider["cpu_count"] or 0,
        memory_mb=provider["memory_mb"] or 0,
        docker=bool(provider["docker"]),
        labels=provider["labels"] or {},
        # read back from our own rows: built without validating again (~10 % of a beat's CPU)
        gpus=[GpuInfo.model_construct(**{f: g[f] for f in GPU_FIELDS}) for g in gpus],
        attempts=held,
    )


def outbox_row(event: ProviderEvent) -> dict[str, Any]:
    """An outbox row for ``event`` (provider_registry/outbox.py publishes it)."""
    return _row(provider_event_subject(event.kind), event.model_dump(mode="json"), event.at)


def _row(subject: str, payload: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {
        # unique within the stream's duplicate window (uuid4() cost ~5 % of a beat's CPU)
        "msg_id": os.urandom(16).hex(),
        "subject": subject,
        "payload": payload,
        "created_at": at,
    }


def held_rows(held: dict[str, list[tuple[str, int]]], at: datetime) -> list[dict[str, Any]]:
    """Outbox rows of :class:`AttemptsHeld` for ``held`` (provider id → its ``(job_id,
    attempt)`` pairs), split every :data:`HELD_PER_ROW` entries; the payload is built as JSON
    directly (a model per attempt would cost what the per-beat events did)."""
    rows: list[dict[str, Any]] = []
    chunk: dict[str, list[tuple[str, int]]] = {}
    size = 0
    for pid, attempts in held.items():
        if chunk and size + 1 + len(attempts) > HELD_PER_ROW:
            rows.append(_held_row(chunk, at))
            chunk, size = {}, 0
        chunk[pid] = attempts
        size += 1 + len(attempts)
    if chunk:
        rows.append(_held_row(chunk, at))
    return rows


def _held_row(chunk: dict[str, list[tuple[str, int]]], at: datetime) -> dict[str, Any]:
    payload = {"kind": HELD_KIND, "at": at.isoformat(), "held": chunk}
    return _row(HELD_SUBJECT, payload, at)


@dataclass
class _Changes:
    """What one batch writes."""

    now: datetime
    beating: list[str] = field(default_factory=list)
    came_back: list[str] = field(default_factory=list)
    gpus: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    held: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # AttemptsHeld


@dataclass
class Absorbed:
    """What :func:`absorb` did: each beat's result in order, how many events it wrote, and each
    stored provider as it is now (its row with ``gpus``: the HTTP endpoint's answer)."""

    results: list[BeatResult]
    events: int
    providers: dict[str, dict[str, Any]]


async def absorb(
    session: AsyncSession, beats: Sequence[tuple[str, HeartbeatIn]], announcer: Announcer
) -> Absorbed:
    """Store ``beats`` (provider id, beat) in the session's transaction; the caller commits.

    Two beats of one provider in a batch: the later one is stored and announced (each lists
    everything its daemon held then, so the later one supersedes), both answer stored.
    """
    latest = {pid: hb for pid, hb in beats}
    providers, gpus = await _locked(session, sorted(latest))
    changes = _Changes(now=utcnow())
    for pid, hb in latest.items():
        row = providers.get(pid)
        if row is not None:
            row["gpus"] = gpus.get(pid, [])
            _beat(changes, row, row["gpus"], hb, announcer)
    changes.events.extend(held_rows(changes.held, changes.now))
    await _write(session, changes)
    results = [
        BeatResult.STORED if pid in providers else BeatResult.NOT_REGISTERED for pid, _ in beats
    ]
    return Absorbed(results, len(changes.events), providers)


async def _locked(
    session: AsyncSession, ids: list[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The providers (locked FOR UPDATE in id order on PostgreSQL, which the sweep's SKIP
    LOCKED then passes over) and their GPUs, as plain dicts."""
    stmt = (
        sa.select(providers_t)
        .where(providers_t.c.id.in_(ids))
        .order_by(providers_t.c.id)
        .with_for_update()
    )
    providers = {r["id"]: r for r in await _dicts(session, stmt)}
    gpus: dict[str, list[dict[str, Any]]] = {}
    if providers:
        q = (
            sa.select(gpus_t)
            .where(gpus_t.c.provider_id.in_(list(providers)))
            .order_by(gpus_t.c.provider_id, gpus_t.c.index)
        )
        for g in await _dicts(session, q):
            gpus.setdefault(g["provider_id"], []).append(g)
    return providers, gpus


async def _dicts(session: AsyncSession, stmt: sa.Select[Any]) -> list[dict[str, Any]]:
    """Rows as dicts, the keys read once (``RowMapping`` builds a key view per row: ~9 % of
    the registry's CPU per beat)."""
    result = await session.execute(stmt)
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]


def _beat(
    changes: _Changes,
    provider: dict[str, Any],
    gpus: list[dict[str, Any]],
    hb: HeartbeatIn,
    announcer: Announcer,
) -> None:
    """One beat's decisions (issue 12): a change of status or health is always an event of its
    own, with the attempts the beat lists; a beat with neither is announced once per
    ``announcer.every`` seconds per provider (it refreshes the scheduler's view of the host),
    with its list if it has one; any other beat that lists attempts goes into the batch's
    :class:`AttemptsHeld` (the scheduler renews leases and reconciles from every listing,
    scheduler/leases.py); one that lists none and changes nothing is not announced."""
    pid = provider["id"]
    changes.beating.append(pid)
    provider["last_heartbeat_at"] = provider["updated_at"] = changes.now
    by_index = {g["index"]: g for g in gpus}
    health_changed = False
    for m in hb.gpus:
        gpu = by_index.get(m.index)
        if gpu is None:
            continue
        values = m.model_dump(exclude={"index", "healthy"}, exclude_none=True)
        if gpu["healthy"] == m.healthy and gpu["metrics"] == values:
            continue  # an unchanged row is not written again
        health_changed = health_changed or gpu["healthy"] != m.healthy
        gpu["healthy"], gpu["metrics"] = m.healthy, values
        changes.gpus.append(
            {"b_provider": pid, "b_index": m.index, "b_healthy": m.healthy, "b_metrics": values}
        )
    came_back = provider["status"] == ProviderStatus.OFFLINE
    if came_back:
        provider["status"] = ProviderStatus.ONLINE
        changes.came_back.append(pid)
        log.info("provider.back_online", provider_id=pid)
    if came_back or health_changed:
        kind = "status"
    elif announcer.due(pid):
        kind = "heartbeat"
    else:
        if hb.attempts is not None:
            changes.held[pid] = [(a.job_id, a.attempt) for a in hb.attempts]
        return
    announcer.mark(pid)
    changes.events.append(outbox_row(event_of(kind, provider, gpus, hb.attempts, changes.now)))


async def _write(session: AsyncSession, c: _Changes) -> None:
    if c.beating:
        await session.execute(
            sa.update(providers_t)
            .where(providers_t.c.id.in_(c.beating))
            .values(last_heartbeat_at=c.now, updated_at=c.now)
        )
    if c.came_back:
        await session.execute(
            sa.update(providers_t)
            .where(providers_t.c.id.in_(c.came_back))
            .values(status=ProviderStatus.ONLINE.value)
        )
    if c.gpus:
        await session.execute(_GPU_CHANGE, c.gpus)
    if c.events:
        await session.execute(sa.insert(outbox_t), c.events)
