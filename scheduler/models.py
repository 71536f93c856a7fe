from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from shared.contracts import DEFAULT_MAX_RETRIES, DEFAULT_PRIORITY, JobSpec, JobSpecListed
from shared.db import Base, UTCDateTime, utcnow


class PlacedHost(NamedTuple):
    """One host the current attempt runs on, with its part of the GPUs and its price."""

    provider_id: str
    gpu_count: int
    price_per_hour: float | None


class SchedulerBase(Base):
    __abstract__ = True
    metadata = sa.MetaData()


class Job(SchedulerBase):
    """The system of record for a job: spec, owner, state and where it runs."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index("ix_jobs_placement", "state", "priority", "created_at"),
        # the owner's list (filtered by state), newest first: the index holds the whole order
        # (created_at, id), so a page is read along it and stops at its limit (issue 12)
        sa.Index("ix_jobs_owner_created_id", "owner_id", "created_at", "id"),
        sa.Index("ix_jobs_owner_state_created_id", "owner_id", "state", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    type: Mapped[str] = mapped_column(sa.String(16))
    name: Mapped[str] = mapped_column(sa.String(128))
    state: Mapped[str] = mapped_column(sa.String(16))
    priority: Mapped[int] = mapped_column(sa.Integer, default=DEFAULT_PRIORITY)
    attempt: Mapped[int] = mapped_column(sa.Integer, default=1)
    max_retries: Mapped[int] = mapped_column(sa.Integer, default=DEFAULT_MAX_RETRIES)
    gpu_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    # the *requested* GPU model glob (column "gpu_model"); the placed GPU's name is ``gpu_name``
    requested_gpu_model: Mapped[str | None] = mapped_column(
        "gpu_model", sa.String(128), nullable=True
    )
    min_vram_mb: Mapped[int] = mapped_column(sa.Integer, default=0)
    min_compute_capability: Mapped[str | None] = mapped_column(sa.String(8), nullable=True)
    # resources.cpu and resources.memory_mb, held on the host while an attempt is active
    cpu: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    memory_mb: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    max_price_per_hour: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    timeout_seconds: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    tags: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    provider_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True, index=True)
    gpu_indices: Mapped[list[int]] = mapped_column(sa.JSON, default=list)
    exit_code: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    correlation_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # dispatched but not reported running by then: the attempt is presumed lost and requeued
    start_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # running: requeued unless its provider confirms the attempt (lists it in a heartbeat) by
    # then; and ended ``timed_out`` by the scheduler itself past its timeout + grace
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    run_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # what the current attempt costs, fixed at placement (the provider may change its price)
    price_per_hour: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    gpu_name: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    # the last reason placement gave for leaving the job queued (an event is written on change)
    wait_reason: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    artifacts: Mapped[list[dict[str, str]]] = mapped_column(sa.JSON, default=list)
    # Optimistic concurrency: every ORM UPDATE of a job says ``WHERE version = <as read>`` and
    # bumps it, so two units of work that read the same state cannot both move the job (on
    # SQLite ``FOR UPDATE`` locks nothing); the later one fails with ``StaleDataError`` and is
    # applied again on fresh state (scheduler/workers.py).
    version: Mapped[int] = mapped_column(sa.Integer, nullable=False, server_default="1")

    __mapper_args__ = {"version_id_col": version}
    # --- issue 17: fair share and preemption (scheduler/fairshare.py, preemption.py) ---
    # the multifactor priority of the last round that saw it queued (higher goes first)
    effective_priority: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    # attempts that ended by preemption: they do not count against ``max_retries``
    preemptions: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    # a placed gang job's ranks: [{rank, provider_id, gpu_indices, state, exit_code}]; rank 0
    # is also ``provider_id``/``gpu_indices`` (scheduler/gang_dispatch.py)
    gang: Mapped[list[dict[str, Any]] | None] = mapped_column(
        sa.JSON(none_as_null=True), nullable=True
    )

    @property
    def job_spec(self) -> JobSpec:
        """The stored spec, typed (the column keeps the JSON the gateway's contract wrote)."""
        return JobSpec.model_validate(self.spec)

    @property
    def listed_spec(self) -> JobSpecListed:
        """What a listing shows of the spec, without validating its program (issue 12)."""
        return JobSpecListed.model_validate(self.spec)

    @property
    def hosts(self) -> list[PlacedHost]:
        """Where the current attempt runs: its provider, or each rank's host of a gang with its
        share of the GPUs at its host's price (a rank placed before ranks carried their price:
        the job's, rank 0's). Empty while unplaced, and then ``gang`` is not read (a queued
        job's is not even loaded). Metering (usage records) and billing (shares) both use it."""
        if not self.provider_id:
            return []
        if not self.gang:
            return [PlacedHost(self.provider_id, self.gpu_count, self.price_per_hour)]
        gpus = self.gpu_count // len(self.gang)  # the job's count is every rank's together
        return [
            PlacedHost(r["provider_id"], gpus, r.get("price_per_hour", self.price_per_hour))
            for r in self.gang
        ]


class JobTag(SchedulerBase):
    """One row per (job, tag): tag filters use an index instead of scanning JSON."""

    __tablename__ = "job_tags"

    job_id: Mapped[str] = mapped_column(
        sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(sa.String(128), primary_key=True, index=True)


class JobEvent(SchedulerBase):
    """Every transition of a job, with when and why."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    from_state: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    to_state: Mapped[str] = mapped_column(sa.String(16))
    attempt: Mapped[int] = mapped_column(sa.Integer)
    cause: Mapped[str] = mapped_column(sa.String(255))


class ProviderView(SchedulerBase):
    """The scheduler's own view of providers, kept from the registry's events."""

    __tablename__ = "provider_views"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    max_concurrent_tasks: Mapped[int] = mapped_column(sa.Integer, default=1)
    price_per_hour: Mapped[float] = mapped_column(sa.Float, default=0.0)
    labels: Mapped[dict[str, str]] = mapped_column(sa.JSON, default=dict)
    gpus: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON, default=list)
    # the host as its daemon reported it (0: not reported); docker: container jobs can run
    cpu_count: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    memory_mb: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    docker: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_placed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    owner_id: Mapped[str | None] = mapped_column(sa.String(36), nullable=True, index=True)
    # the newest heartbeat (registry time) that listed the attempts its daemon holds: a running
    # attempt whose lease ran out before it was not among them (scheduler/leases.py)
    attempts_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # bumped on every applied event: placement keeps each provider's parsed hardware between
    # rounds and re-reads a row only when its version moved (scheduler/dispatch.py)
    version: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    # an admin's cordon (issue 17): no new work; ``drain`` also requeues what runs there
    cordoned: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    cordon_reason: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)


class OwnerPolicy(SchedulerBase):
    """An owner's fair-share weight and quotas, set by an admin (scheduler/quotas.py)."""

    __tablename__ = "owner_policies"

    owner_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    share: Mapped[float] = mapped_column(sa.Float, default=1.0)
    max_gpus: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    max_gpu_hours: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    period_seconds: Mapped[int] = mapped_column(sa.Integer, default=30 * 86400)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OwnerUsage(SchedulerBase):
    """An owner's decayed GPU-seconds (fair share), brought forward at each ended attempt."""

    __tablename__ = "owner_usage"

    owner_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    decayed_gpu_seconds: Mapped[float] = mapped_column(sa.Float, default=0.0)
    as_of: Mapped[datetime] = mapped_column(UTCDateTime)


class AttemptUsage(SchedulerBase):
    """GPU-seconds of each ended attempt (requeued ones too), for GPU-hour quota windows."""

    __tablename__ = "attempt_usage"
    __table_args__ = (
        sa.Index("ix_attempt_usage_owner_ended", "owner_id", "ended_at"),
        sa.UniqueConstraint("job_id", "attempt", name="uq_attempt_usage_attempt"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    owner_id: Mapped[str] = mapped_column(sa.String(36))
    job_id: Mapped[str] = mapped_column(sa.String(36))
    attempt: Mapped[int] = mapped_column(sa.Integer)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    gpu_seconds: Mapped[float] = mapped_column(sa.Float)


class UsageRecord(SchedulerBase):
    """What one attempt used and cost on one host, written once when it ends (one row per
    job attempt; a gang's attempt, one per rank's host)."""

    __tablename__ = "usage_records"
    __table_args__ = (
        sa.UniqueConstraint(
            "job_id", "attempt", "provider_id", name="uq_usage_job_attempt_provider"
        ),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(sa.Integer)
    owner_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    provider_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    state: Mapped[str] = mapped_column(sa.String(16))
    # the placed GPUs' model name (column "gpu_model", the name the API has always shown)
    gpu_name: Mapped[str | None] = mapped_column("gpu_model", sa.String(128), nullable=True)
    gpu_count: Mapped[int] = mapped_column(sa.Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    seconds: Mapped[float] = mapped_column(sa.Float)
    gpu_seconds: Mapped[float] = mapped_column(sa.Float)
    price_per_hour: Mapped[float] = mapped_column(sa.Float)
    cost: Mapped[float] = mapped_column(sa.Float)


class UsageOutbox(SchedulerBase):
    """Billing usage of one ended attempt, until it is on JetStream (scheduler/billing.py)."""

    __tablename__ = "usage_outbox"
    __table_args__ = (sa.UniqueConstraint("job_id", "attempt", name="uq_usage_outbox_attempt"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.String(36))
    attempt: Mapped[int] = mapped_column(sa.Integer)
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
