"""The metric helpers on their own: route templates, requeue causes, the GPU collector and the
timed object-store wrapper (real FastAPI app in-process, real local-disk backend)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from prometheus_client import REGISTRY, generate_latest

from provider_daemon import metrics as daemon_metrics
from provider_daemon.inventory import GpuInfo, Inventory
from scheduler.metrics import CAUSES, cause_of
from shared.app import RequestContext
from shared.errors import NotFound
from storage_service.metrics import TimedBackend


def sample(name: str, labels: dict[str, str]) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_http_metrics_carry_the_full_route_template_never_the_path() -> None:
    router = APIRouter()

    @router.post("")
    async def create() -> dict[str, str]:
        return {}

    @router.get("/{item_id}/parts/{part}")
    async def part(item_id: str, part: int) -> dict[str, str]:
        return {}

    app = FastAPI()
    app.add_middleware(RequestContext)
    app.include_router(router, prefix="/api/v1/things")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        assert (await c.post("/api/v1/things")).status_code == 200
        assert (await c.get("/api/v1/things/abc123/parts/7")).status_code == 200
        assert (await c.get("/no/such/abc123")).status_code == 404
    name = "dante_http_requests_total"
    assert sample(name, {"method": "POST", "route": "/api/v1/things", "status": "200"}) >= 1
    template = "/api/v1/things/{item_id}/parts/{part}"
    assert sample(name, {"method": "GET", "route": template, "status": "200"}) >= 1
    assert sample(name, {"method": "GET", "route": "unmatched", "status": "404"}) >= 1
    assert b"abc123" not in generate_latest()


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("not started by its deadline on provider p1", "deadline"),
        ("provider 0b3c offline", "provider_lost"),
        ("provider 0b3c draining", "provider_lost"),
        ("returned by the provider", "provider_returned"),
        ("reported by provider p1", "provider_returned"),
        ("something new", "other"),
    ],
)
def test_requeue_causes_are_a_bounded_set(text: str, cause: str) -> None:
    assert cause_of(text) == cause and cause in CAUSES


def test_gpu_collector_reports_the_heartbeat_readings() -> None:
    inv = Inventory(
        cpu_count=8,
        memory_mb=1024,
        gpus=[GpuInfo(index=0, uuid="GPU-0", name="NVIDIA A100", memory_total_mb=40960)],
    )
    readings = [
        {
            "index": 0,
            "healthy": False,
            "xid_errors": 3,
            "utilization_pct": 55.0,
            "memory_used_mb": 1024.0,
            "temperature_c": 70.0,
        }
    ]
    daemon_metrics.record_gpus("prov-unit", readings, inv)
    key = {"provider": "prov-unit", "gpu": "0"}
    assert sample("dante_gpu_utilization_percent", key) == 55.0
    assert sample("dante_gpu_memory_used_bytes", key) == 1024 * (1 << 20)
    assert sample("dante_gpu_memory_total_bytes", key) == 40960 * (1 << 20)
    assert sample("dante_gpu_healthy", key) == 0
    assert sample("dante_gpu_xid_errors_total", key) == 3
    # no power reading (not supported by this GPU): no series rather than a made-up 0
    assert sample("dante_gpu_power_watts", key) is None


async def test_timed_backend_counts_outcomes_and_marks_the_store_down(tmp_path: Path) -> None:
    class Flaky:
        name = "unit"

        def __init__(self) -> None:
            self.down = False

        async def stat(self, bucket: str, key: str) -> str:
            if self.down:
                raise ConnectionError("refused")
            if key == "missing":
                raise NotFound("no such object")
            return "info"

        def presign(self, *a: object) -> str:
            return "url"

    inner = Flaky()
    backend = TimedBackend(inner)
    assert backend.presign("GET", "b", "k", 60) == "url"  # sync methods pass through
    assert await backend.stat("b", "k") == "info"
    with pytest.raises(NotFound):  # a domain answer: the store works
        await backend.stat("b", "missing")
    assert sample("dante_dependency_up", {"dependency": "object_store"}) == 1
    inner.down = True
    with pytest.raises(ConnectionError):
        await backend.stat("b", "k")
    assert sample("dante_dependency_up", {"dependency": "object_store"}) == 0
    labels = {"backend": "unit", "op": "stat"}
    assert sample("dante_storage_backend_requests_total", {**labels, "outcome": "ok"}) == 2
    assert sample("dante_storage_backend_requests_total", {**labels, "outcome": "error"}) == 1
    assert sample("dante_storage_backend_request_duration_seconds_count", labels) == 3
