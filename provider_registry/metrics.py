"""What the registry exports: the fleet by status, heartbeat age, GPUs by health, losses.

The figures are read from the registry's own tables by the sweep loop (every few seconds), so
every replica exports the same values; heartbeat age is computed when scraped, from the last
heartbeat times read then, so it keeps growing for a provider that went silent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import sqlalchemy as sa
from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from provider_registry.models import Gpu, Provider
from provider_registry.schemas import ProviderStatus
from shared.metrics import dependency_up

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from shared.db import UnitOfWork

providers_by_status = Gauge(
    "dante_registry_providers", "Registered providers, by status.", ["status"]
)
gpus_by_health = Gauge(
    "dante_registry_gpus",
    "GPUs of registered providers, by provider status and health.",
    ["status", "healthy"],
)
providers_lost = Counter(
    "dante_registry_providers_lost_total",
    "Providers marked offline by the liveness sweep (heartbeat older than the TTL).",
)


def on_lost(uow: UnitOfWork, n: int) -> None:
    """Count providers the sweep marked offline, once its commit succeeded."""
    if n:

        async def count() -> None:
            providers_lost.inc(n)

        uow.after_commit(count)


class _HeartbeatAge(Collector):
    """``dante_registry_provider_heartbeat_age_seconds{provider}``, computed at scrape time."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[str, float]] = {}  # provider id -> (status, unix time)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily(
            "dante_registry_provider_heartbeat_age_seconds",
            "Seconds since the provider's last heartbeat.",
            labels=["provider", "status"],
        )
        now = time.time()
        for pid, (status, at) in sorted(self.last.items()):
            g.add_metric([pid, status], max(0.0, now - at))
        yield g


heartbeat_age = _HeartbeatAge()
REGISTRY.register(heartbeat_age)


async def refresh(session: AsyncSession) -> None:
    """Read the fleet's figures (three small aggregate queries) into the gauges."""
    try:
        statuses = (
            await session.execute(
                sa.select(Provider.status, sa.func.count()).group_by(Provider.status)
            )
        ).all()
        gpus = (
            await session.execute(
                sa.select(Provider.status, Gpu.healthy, sa.func.count())
                .join(Gpu, Gpu.provider_id == Provider.id)
                .group_by(Provider.status, Gpu.healthy)
            )
        ).all()
        beats = (
            await session.execute(
                sa.select(Provider.id, Provider.status, Provider.last_heartbeat_at)
            )
        ).all()
    except Exception:
        dependency_up.labels("database").set(0)
        raise
    dependency_up.labels("database").set(1)
    counts = {str(s): int(n) for s, n in statuses}
    for status in ProviderStatus:
        providers_by_status.labels(str(status)).set(counts.get(str(status), 0))
    seen = {(str(s), "true" if h else "false"): int(n) for s, h, n in gpus}
    for status in ProviderStatus:
        for healthy in ("true", "false"):
            gpus_by_health.labels(str(status), healthy).set(seen.get((str(status), healthy), 0))
    heartbeat_age.last = {
        pid: (str(status), at.timestamp()) for pid, status, at in beats if at is not None
    }
