"""The NVML double: ``pynvml`` autospecced (every signature real), with invented answers for
GPUs that this machine does not have (no NVIDIA GPU or driver can run here)."""

from __future__ import annotations

import ctypes
from types import SimpleNamespace
from typing import Any
from unittest.mock import create_autospec

import pynvml


class FakeGpu:
    def __init__(self, index: int, **kw: Any) -> None:
        self.index = index
        self.handle = ctypes.c_void_p(0x1000 + index)  # NVML handles are opaque pointers
        self.fail: int | None = kw.get("fail")  # an NVML error code every call raises
        self.pending_retire = kw.get("pending_retire", False)
        self.remap_failed = kw.get("remap_failed", False)
        self.retired = kw.get("retired", [])


def fake_nvml(gpus: list[FakeGpu], events: list[tuple[int, int]] | None = None) -> Any:
    """``pynvml`` with its functions autospecced; only answers are invented, not signatures."""
    lib = create_autospec(pynvml)
    by_handle = {g.handle.value: g for g in gpus}
    queued = list(events or [])

    def gpu(h: Any) -> FakeGpu:
        g = by_handle[h.value]
        if g.fail is not None:
            raise pynvml.NVMLError(g.fail)
        return g

    lib.nvmlDeviceGetCount.return_value = len(gpus)
    lib.nvmlDeviceGetHandleByIndex.side_effect = lambda i: gpus[i].handle
    lib.nvmlDeviceGetIndex.side_effect = lambda h: by_handle[h.value].index
    lib.nvmlDeviceGetUUID.side_effect = lambda h: f"GPU-{gpu(h).index:08d}"
    lib.nvmlDeviceGetName.side_effect = lambda h: b"NVIDIA H100 80GB HBM3" and "NVIDIA H100"
    lib.nvmlDeviceGetCudaComputeCapability.side_effect = lambda h: (gpu(h) and 9, 0)
    lib.nvmlDeviceGetMemoryInfo.side_effect = lambda h: SimpleNamespace(
        total=gpu(h) and 80 << 30, used=10 << 30, free=70 << 30
    )
    lib.nvmlDeviceGetPowerManagementLimit.side_effect = lambda h: gpu(h) and 700_000
    lib.nvmlDeviceGetUtilizationRates.side_effect = lambda h: SimpleNamespace(
        gpu=gpu(h) and 87, memory=40
    )
    lib.nvmlDeviceGetTemperature.side_effect = lambda h, sensor: gpu(h) and 61
    lib.nvmlDeviceGetPowerUsage.side_effect = lambda h: gpu(h) and 350_500
    lib.nvmlDeviceGetRetiredPages.side_effect = lambda h, cause: gpu(h).retired if cause else []
    lib.nvmlDeviceGetRetiredPagesPendingStatus.side_effect = lambda h: int(gpu(h).pending_retire)

    def remapped(h: Any) -> Any:
        g = gpu(h)
        if g.remap_failed is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return (0, 1 if g.remap_failed else 0, 0, int(bool(g.remap_failed)))

    lib.nvmlDeviceGetRemappedRows.side_effect = remapped
    lib.nvmlSystemGetDriverVersion.return_value = "550.54.15"
    lib.nvmlSystemGetCudaDriverVersion.return_value = 12040

    def wait(event_set: Any, timeout_ms: int) -> Any:
        if not queued:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
        index, xid = queued.pop(0)
        return SimpleNamespace(device=gpus[index].handle, eventData=xid)

    lib.nvmlEventSetWait_v2.side_effect = wait
    lib.queue = queued
    return lib
