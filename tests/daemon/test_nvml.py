"""The NVML layer against nvidia-ml-py's real API surface.

This machine has no NVIDIA GPU and no driver, so the real ``pynvml.nvmlInit`` fails here and the
first tests exercise that real failure path. Where a GPU is needed, ONLY the library handle is
replaced: a fake built with ``create_autospec(pynvml)``, so every call is checked against
pynvml's real function signatures, and every error raised is pynvml's own ``NVMLError``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pynvml
import pytest
import structlog

from provider_daemon.inventory import Nvml, collect
from tests.support.nvml import FakeGpu, fake_nvml


def test_real_pynvml_without_a_driver_is_cpu_only_with_one_clear_line() -> None:
    with structlog.testing.capture_logs() as logs:
        nvml = Nvml()  # the real pynvml module, the real nvmlInit
    assert nvml.available is False
    assert "NVMLError_LibraryNotFound" in (nvml.reason or "")
    assert [e["event"] for e in logs] == ["nvml.unavailable"]
    assert logs[0]["offering"] == "CPU only"
    inv = collect(nvml)
    assert inv.gpus == [] and inv.driver_version is None and inv.cpu_count == os.cpu_count()
    assert nvml.metrics() == []
    nvml.close()  # nothing was initialised: closing is a no-op, not an error


def test_gpus_json_cli_on_this_host_reports_cpu_only() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "provider_daemon", "gpus", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    inv = json.loads(out.stdout)
    assert inv["gpus"] == [] and inv["cpu_count"] == os.cpu_count() and inv["memory_mb"] > 0


def test_inventory_per_gpu_with_versions() -> None:
    lib = fake_nvml([FakeGpu(0), FakeGpu(1, remap_failed=None)])
    nvml = Nvml(lib)
    inv = collect(nvml)
    assert inv.driver_version == "550.54.15" and inv.cuda_version == "12.4"
    assert [g.index for g in inv.gpus] == [0, 1]
    g = inv.gpus[0]
    assert (g.uuid, g.name, g.memory_total_mb) == ("GPU-00000000", "NVIDIA H100", 80 * 1024)
    assert g.compute_capability == "9.0" and g.power_limit_w == 700.0 and g.healthy
    assert inv.gpus[1].healthy  # row remapping not supported on that one: not a fault
    as_json = inv.as_json()
    assert as_json["gpus"][1]["driver_version"] == "550.54.15"
    assert as_json["gpus"][1]["cuda_version"] == "12.4"
    # every XID-capable GPU was registered for critical XID events with pynvml's real constant
    calls = lib.nvmlDeviceRegisterEvents.call_args_list
    assert [c.args[1] for c in calls] == [pynvml.nvmlEventTypeXidCriticalError] * 2
    nvml.close()
    lib.nvmlEventSetFree.assert_called_once()
    lib.nvmlShutdown.assert_called_once()
    nvml.close()  # shut down once, however often close is called
    lib.nvmlShutdown.assert_called_once()


def test_one_failing_gpu_is_unhealthy_never_fatal() -> None:
    lost = FakeGpu(1, fail=pynvml.NVML_ERROR_GPU_IS_LOST)
    nvml = Nvml(fake_nvml([FakeGpu(0), lost, FakeGpu(2)]))
    gpus = nvml.gpus()
    assert [(g.index, g.healthy) for g in gpus] == [(0, True), (1, False), (2, True)]
    metrics = nvml.metrics()
    assert [m["healthy"] for m in metrics] == [True, False, True]
    m = metrics[0]
    assert m["utilization_pct"] == 87.0 and m["temperature_c"] == 61.0
    assert m["memory_used_mb"] == 10 * 1024 and m["power_draw_w"] == 350.5
    assert m["retired_pages"] == 0 and m["xid_errors"] == 0


def test_xids_retired_pages_and_remap_failures_mark_gpus_unhealthy() -> None:
    gpus = [
        FakeGpu(0),
        FakeGpu(1, pending_retire=True, retired=[0x1000, 0x2000]),
        FakeGpu(2, remap_failed=True),
        FakeGpu(3),
    ]
    lib = fake_nvml(gpus, events=[(0, 13), (3, 79)])  # 13: app fault; 79: fallen off the bus
    nvml = Nvml(lib)
    metrics = {m["index"]: m for m in nvml.metrics()}
    assert metrics[0]["healthy"] and metrics[0]["xid_errors"] == 1
    assert not metrics[1]["healthy"] and metrics[1]["retired_pages"] == 2
    assert not metrics[2]["healthy"]
    assert not metrics[3]["healthy"] and nvml.fatal_xid == {3: 79}
    # a fatal XID stays: the GPU needs a reset, and the next beat still says so
    assert not {m["index"]: m for m in nvml.metrics()}[3]["healthy"]
    assert [g.healthy for g in nvml.gpus()] == [True, False, False, False]


def test_event_support_missing_is_not_an_error() -> None:
    lib = fake_nvml([FakeGpu(0)])
    lib.nvmlEventSetCreate.side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    nvml = Nvml(lib)
    assert nvml.available and nvml.metrics()[0]["healthy"]
    lib.nvmlEventSetWait_v2.assert_not_called()


@pytest.mark.parametrize(
    "code", [pynvml.NVML_ERROR_DRIVER_NOT_LOADED, pynvml.NVML_ERROR_NO_PERMISSION]
)
def test_init_failure_from_the_driver_is_cpu_only(code: int) -> None:
    lib = fake_nvml([FakeGpu(0)])
    lib.nvmlInit.side_effect = pynvml.NVMLError(code)
    nvml = Nvml(lib)
    assert not nvml.available and nvml.gpus() == [] and nvml.metrics() == []
    assert type(pynvml.NVMLError(code)).__name__ in (nvml.reason or "")
    nvml.close()
    lib.nvmlShutdown.assert_not_called()
