"""Billing tests reuse the scheduler's real-server fixtures (own nats-server, registry, DBs)."""

from tests.scheduler.conftest import own_nats, registry, registry_db, sched_db

__all__ = ["own_nats", "registry", "registry_db", "sched_db"]
