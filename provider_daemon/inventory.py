"""What the host has: NVIDIA GPUs through NVML when present, else CPU and memory only.

Functions are called through a library handle (the real ``pynvml`` module unless a test hands
in another); constants and exception classes always come from the real ``pynvml``, so error
handling is written against nvidia-ml-py's own ``NVMLError`` hierarchy.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

try:
    import pynvml
except ImportError:  # a declared dependency, but a broken install must still run CPU-only
    pynvml = None

log = structlog.get_logger(__name__)

# XIDs that mean the GPU itself needs attention (NVIDIA's XID catalogue: double-bit ECC, row
# remap failure, fallen off the bus, NVLink, contained/uncontained ECC, GSP errors). XIDs an
# application causes (13 graphics exception, 31 MMU fault, 43 reset channel, 45 preemptive
# cleanup) are counted but leave the GPU healthy.
FATAL_XIDS = frozenset({48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120})

_NVMLError: type[Exception] = pynvml.NVMLError if pynvml else Exception


@dataclass
class GpuInfo:
    """One GPU as the registry stores it (the registry's ``GpuIn`` schema, field for field)."""

    index: int
    uuid: str
    name: str
    memory_total_mb: int
    compute_capability: str | None = None
    power_limit_w: float | None = None
    healthy: bool = True


@dataclass
class Inventory:
    cpu_count: int
    memory_mb: int
    gpus: list[GpuInfo] = field(default_factory=list)
    driver_version: str | None = None
    cuda_version: str | None = None
    docker: bool = False  # a Docker engine answered at startup: container jobs can run here

    def registration(self) -> dict[str, Any]:
        return {
            "cpu_count": self.cpu_count,
            "memory_mb": self.memory_mb,
            "docker": self.docker,
            "driver_version": self.driver_version,
            "cuda_version": self.cuda_version,
            "gpus": [asdict(g) for g in self.gpus],
        }

    def as_json(self) -> dict[str, Any]:
        """``dante-provider gpus --json``: each GPU also carries the host's driver and CUDA."""
        out = asdict(self)
        for g in out["gpus"]:
            g["driver_version"], g["cuda_version"] = self.driver_version, self.cuda_version
        return out


def host_memory_mb() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError):
        return 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _not_supported(exc: Exception) -> bool:
    return pynvml is not None and isinstance(exc, pynvml.NVMLError_NotSupported)


class Nvml:
    """NVML initialised once, shut down once. ``available`` is False when no driver exists;
    ``reason`` then says why (logged once, as one line)."""

    def __init__(self, lib: Any | None = None) -> None:
        self.available = False
        self.reason: str | None = None
        self._lib = lib if lib is not None else pynvml
        self._events: Any = None
        self.xid_counts: Counter[int] = Counter()
        self.fatal_xid: dict[int, int] = {}
        if self._lib is None:
            self.reason = "nvidia-ml-py (pynvml) is not installed"
        else:
            try:
                self._lib.nvmlInit()
                self.available = True
            except Exception as exc:  # no driver, no library, no GPU: a CPU-only provider
                self.reason = f"{type(exc).__name__}: {exc}"
        if not self.available:
            log.warning("nvml.unavailable", reason=self.reason, offering="CPU only")
            return
        self._watch_xids()

    def _watch_xids(self) -> None:
        """Register every GPU for critical-XID events; a GPU (or driver) without event support
        is simply not watched."""
        lib = self._lib
        try:
            self._events = lib.nvmlEventSetCreate()
            for i in range(lib.nvmlDeviceGetCount()):
                try:
                    h = lib.nvmlDeviceGetHandleByIndex(i)
                    lib.nvmlDeviceRegisterEvents(
                        h, pynvml.nvmlEventTypeXidCriticalError, self._events
                    )
                except _NVMLError as exc:
                    log.info("nvml.xid_unwatched", index=i, reason=str(exc))
        except _NVMLError as exc:
            log.info("nvml.events_unavailable", reason=str(exc))
            self._events = None

    def poll_xids(self) -> None:
        """Take every XID event queued since the last call (non-blocking)."""
        if self._events is None:
            return
        lib = self._lib
        while True:
            try:
                ev = lib.nvmlEventSetWait_v2(self._events, 0)
            except _NVMLError:  # NVMLError_Timeout: nothing queued (or events broke: stop)
                return
            try:
                index = lib.nvmlDeviceGetIndex(ev.device)
            except _NVMLError:
                continue
            xid = int(ev.eventData)
            self.xid_counts[index] += 1
            if xid in FATAL_XIDS:
                self.fatal_xid[index] = xid
                log.error("nvml.gpu_fatal_xid", index=index, xid=xid)
            else:
                log.warning("nvml.gpu_xid", index=index, xid=xid)

    def close(self) -> None:
        if not self.available:
            return
        try:
            if self._events is not None:
                self._lib.nvmlEventSetFree(self._events)
                self._events = None
        except _NVMLError:
            pass
        finally:
            self._lib.nvmlShutdown()
            self.available = False

    def count(self) -> int:
        return self._lib.nvmlDeviceGetCount() if self.available else 0

    def gpus(self) -> list[GpuInfo]:
        if not self.available:
            return []
        lib = self._lib
        out: list[GpuInfo] = []
        for i in range(lib.nvmlDeviceGetCount()):
            uuid = ""
            try:
                h = lib.nvmlDeviceGetHandleByIndex(i)
                uuid = _text(lib.nvmlDeviceGetUUID(h))
                major, minor = lib.nvmlDeviceGetCudaComputeCapability(h)
                try:
                    power: float | None = lib.nvmlDeviceGetPowerManagementLimit(h) / 1000.0
                except _NVMLError as exc:
                    if not _not_supported(exc):
                        raise
                    power = None
                out.append(
                    GpuInfo(
                        index=i,
                        uuid=uuid,
                        name=_text(lib.nvmlDeviceGetName(h)),
                        memory_total_mb=int(lib.nvmlDeviceGetMemoryInfo(h).total // (1 << 20)),
                        compute_capability=f"{major}.{minor}",
                        power_limit_w=power,
                        healthy=self._healthy(i, h)[0],
                    )
                )
            except Exception as exc:  # one failing GPU is reported unhealthy, never fatal
                log.warning("nvml.gpu_failed", index=i, error=f"{type(exc).__name__}: {exc}")
                out.append(
                    GpuInfo(index=i, uuid=uuid, name="unknown", memory_total_mb=0, healthy=False)
                )
        return out

    def _healthy(self, index: int, h: Any) -> tuple[bool, int | None]:
        """(healthy, retired page count): a fatal XID, a page retirement waiting for a reset or
        a failed row remap makes the GPU unhealthy until the daemon restarts after a reset."""
        lib = self._lib
        healthy = index not in self.fatal_xid
        retired: int | None = None
        try:
            retired = sum(
                len(lib.nvmlDeviceGetRetiredPages(h, cause))
                for cause in (
                    pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
                    pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
                )
            )
            if lib.nvmlDeviceGetRetiredPagesPendingStatus(h) == pynvml.NVML_FEATURE_ENABLED:
                healthy = False
        except _NVMLError as exc:  # consumer GPUs and Ampere+ (row remapping) say NotSupported
            if not _not_supported(exc):
                raise
        try:
            _, _, _, failed = lib.nvmlDeviceGetRemappedRows(h)
            if failed:
                healthy = False
        except _NVMLError as exc:
            if not _not_supported(exc):
                raise
        return healthy, retired

    def versions(self) -> tuple[str | None, str | None]:
        if not self.available:
            return None, None
        try:
            driver = _text(self._lib.nvmlSystemGetDriverVersion())
            cuda = self._lib.nvmlSystemGetCudaDriverVersion()
        except _NVMLError as exc:
            log.warning("nvml.versions_failed", error=str(exc))
            return None, None
        return driver, f"{cuda // 1000}.{(cuda % 1000) // 10}"

    def metrics(self) -> list[dict[str, Any]]:
        """One heartbeat's per-GPU metrics (the registry's ``GpuMetrics`` schema)."""
        if not self.available:
            return []
        self.poll_xids()
        lib = self._lib
        out = []
        for i in range(lib.nvmlDeviceGetCount()):
            m: dict[str, Any] = {"index": i, "healthy": True, "xid_errors": self.xid_counts[i]}
            try:
                h = lib.nvmlDeviceGetHandleByIndex(i)
                m["utilization_pct"] = float(lib.nvmlDeviceGetUtilizationRates(h).gpu)
                m["memory_used_mb"] = lib.nvmlDeviceGetMemoryInfo(h).used / (1 << 20)
                m["temperature_c"] = float(
                    lib.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
                )
                try:
                    m["power_draw_w"] = lib.nvmlDeviceGetPowerUsage(h) / 1000.0
                except _NVMLError as exc:
                    if not _not_supported(exc):
                        raise
                m["healthy"], m["retired_pages"] = self._healthy(i, h)
            except Exception as exc:
                log.warning("nvml.metrics_failed", index=i, error=f"{type(exc).__name__}: {exc}")
                m["healthy"] = False
            out.append(m)
        return out


def collect(nvml: Nvml) -> Inventory:
    driver, cuda = nvml.versions()
    return Inventory(
        cpu_count=os.cpu_count() or 1,
        memory_mb=host_memory_mb(),
        gpus=nvml.gpus(),
        driver_version=driver,
        cuda_version=cuda,
    )
