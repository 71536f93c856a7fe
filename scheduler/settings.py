from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic_settings import SettingsConfigDict

from scheduler.fairshare import FairShareConfig
from shared.settings import DEFAULT_PORTS, ServiceSettings


class SchedulerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DANTE_SCHEDULER_", extra="ignore")

    service_name: str = "scheduler"
    port: int = DEFAULT_PORTS["scheduler"]
    database_url: str = "sqlite+aiosqlite:///.dev/db/scheduler.sqlite"
    placement_interval_seconds: float = 1.0
    placement_batch: int = 1000
    # messages fetched at once from JOBS, STATUS and EVENTS and applied in one transaction
    # (acked after its commit); a failing batch is redone one message at a time
    consume_batch: int = 1000
    # dispatched but not reported running within this → the attempt is presumed lost (a daemon
    # that died before taking it, or a publish lost in a crash) and the job is requeued
    dispatch_timeout_seconds: float = 60.0
    # A running attempt's lease: renewed each time its provider's heartbeat lists it; not
    # renewed for this long (provider online but silent about it, or its events lost) → the
    # job is requeued. Keep it at the registry's heartbeat TTL (≥ 2 heartbeat intervals).
    lease_seconds: float = 30.0
    # A heartbeat that does not list a running attempt requeues it at once, unless the attempt
    # started less than this before the beat (its "running" report may have overtaken the beat).
    reconcile_grace_seconds: float = 5.0
    # The scheduler ends a running job ``timed_out`` this long after its ``timeout_seconds``
    # (the daemon enforces the timeout itself; this catches a daemon that never reports).
    timeout_grace_seconds: float = 30.0
    # the service-token client the scheduler presents to storage when presigning job I/O
    service_client_id: str = "scheduler"
    service_client_secret: str = ""
    presign_expires_seconds: int = 6 * 3600
    # JetStream redelivers a message fetched by a replica that died after this long
    ack_wait_seconds: float = 30.0
    # on shutdown: how long the loops may finish what they hold before being cancelled (safe:
    # an unacked message is redelivered, a rolled-back round is redone)
    shutdown_grace_seconds: float = 10.0
    # after a wake-up hint, wait this long so a burst of submissions is placed in one round
    placement_coalesce_seconds: float = 0.01
    # A message whose handling keeps failing (database away) is retried with exponential
    # back-off up to this cap; after ``max_deliver`` tries a submission is stored as failed
    # with the reason, anything else goes to the DEAD stream and is replayed once this old.
    max_deliver: int = 10
    retry_backoff_cap_seconds: float = 30.0
    dead_letter_replay_seconds: float = 60.0
    # ask the billing service for a hold before each dispatch (scheduler/billing.py); needs
    # the service credentials above. Off: jobs run unbilled (usage is still published).
    billing_holds: bool = False
    # --- issue 17: fair share, preemption (docs/scheduler.md "Policies") ---
    # multifactor priority (scheduler/fairshare.py): weights of priority, age and fair share
    fairshare_weight_priority: float = 10_000.0
    fairshare_weight_age: float = 100.0
    fairshare_weight_fairshare: float = 10_000.0
    fairshare_max_age_seconds: float = 7 * 86_400.0
    fairshare_half_life_seconds: float = 7 * 86_400.0
    # besides the batch, each waiting owner's first N queued jobs join the round, so one
    # owner's flood cannot keep the others out of it (fair share then orders them)
    fairshare_per_owner: int = 20
    # off | same-owner | lower-priority (scheduler/preemption.py)
    preemption: Literal["off", "same-owner", "lower-priority"] = "off"
    # a job runs at least this long before it may be preempted (no thrash)
    preemption_min_run_seconds: float = 600.0

    def fairshare(self, shares: Mapping[str, float]) -> FairShareConfig:
        return FairShareConfig(
            weight_priority=self.fairshare_weight_priority,
            weight_age=self.fairshare_weight_age,
            weight_fairshare=self.fairshare_weight_fairshare,
            max_age_seconds=self.fairshare_max_age_seconds,
            half_life_seconds=self.fairshare_half_life_seconds,
            shares=dict(shares),
        )
