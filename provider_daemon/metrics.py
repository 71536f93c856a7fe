"""Per-GPU gauges from the daemon's NVML readings, labelled by provider and GPU index.

The heartbeat loop hands each reading it sends to :func:`record_gpus`; a scrape reports the
latest one, so Prometheus sees exactly what the registry was told (no second NVML poll). The
XID count is cumulative since the daemon started (a counter); everything else is a gauge.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from provider_daemon.inventory import Inventory

MIB = 1 << 20

# (metric name, help, reading key, multiplier)
GAUGES: tuple[tuple[str, str, str, float], ...] = (
    ("dante_gpu_utilization_percent", "GPU busy time over the last sample.", "utilization_pct", 1),
    ("dante_gpu_memory_used_bytes", "GPU memory in use.", "memory_used_mb", MIB),
    ("dante_gpu_temperature_celsius", "GPU core temperature.", "temperature_c", 1),
    ("dante_gpu_power_watts", "GPU power draw.", "power_draw_w", 1),
    (
        "dante_gpu_retired_pages",
        "GPU memory pages retired or pending retirement.",
        "retired_pages",
        1,
    ),
)


class GpuCollector(Collector):
    def __init__(self) -> None:
        self.provider_id: str | None = None
        self.readings: list[dict[str, Any]] = []
        self.inventory: dict[int, Any] = {}
        self.last_heartbeat = 0.0

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        pid = self.provider_id
        if pid is None:
            return
        labels = ["provider", "gpu"]
        info = GaugeMetricFamily(
            "dante_gpu_info", "One per GPU: its model and UUID.", labels=[*labels, "model", "uuid"]
        )
        total = GaugeMetricFamily("dante_gpu_memory_total_bytes", "GPU memory.", labels=labels)
        for i, g in sorted(self.inventory.items()):
            info.add_metric([pid, str(i), g.name, g.uuid], 1)
            total.add_metric([pid, str(i)], g.memory_total_mb * MIB)
        yield info
        yield total
        healthy = GaugeMetricFamily(
            "dante_gpu_healthy",
            "1 when NVML reports the GPU healthy (no fatal XID, ECC, or retired-page problem).",
            labels=labels,
        )
        xids = CounterMetricFamily(
            "dante_gpu_xid_errors", "XID error events seen since the daemon started.", labels=labels
        )
        families = [GaugeMetricFamily(n, h, labels=labels) for n, h, _, _ in GAUGES]
        for r in self.readings:
            key = [pid, str(r["index"])]
            healthy.add_metric(key, 1 if r.get("healthy", True) else 0)
            xids.add_metric(key, r.get("xid_errors", 0) or 0)
            for fam, (_, _, field, mult) in zip(families, GAUGES, strict=True):
                if r.get(field) is not None:
                    fam.add_metric(key, float(r[field]) * mult)
        yield healthy
        yield xids
        yield from families
        beat = GaugeMetricFamily(
            "dante_daemon_last_heartbeat_timestamp_seconds",
            "When the daemon last took a GPU reading for a heartbeat (Unix time).",
            labels=["provider"],
        )
        beat.add_metric([pid], self.last_heartbeat)
        yield beat


gpus = GpuCollector()
REGISTRY.register(gpus)


def record_gpus(
    provider_id: str | None, readings: list[dict[str, Any]], inventory: Inventory | None
) -> None:
    """Keep the heartbeat's readings for the next scrape."""
    gpus.provider_id = provider_id
    gpus.readings = list(readings)
    gpus.inventory = {g.index: g for g in (inventory.gpus if inventory else [])}
    gpus.last_heartbeat = time.time()
