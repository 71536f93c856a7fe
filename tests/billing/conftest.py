"""Billing tests reuse the scheduler's real-server fixtures (own nats-server, registry, DBs,
the in-process scheduler)."""

from tests.scheduler.conftest import (
    own_nats,
    registry,
    registry_db,
    sched_db,
    scheduler_factory,
)

__all__ = ["own_nats", "registry", "registry_db", "sched_db", "scheduler_factory"]
