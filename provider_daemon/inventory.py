"""What the host has: NVIDIA GPUs through NVML when present, else CPU and memory only."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

log = structlog.get_logger(__name__)


@dataclass
class GpuInfo:
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

    def registration(self) -> dict[str, Any]:
        return {
            "cpu_count": self.cpu_count,
            "memory_mb": self.memory_mb,
            "driver_version": self.driver_version,
            "cuda_version": self.cuda_version,
            "gpus": [asdict(g) for g in self.gpus],
        }


def host_memory_mb() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError):
        return 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Nvml:
    """NVML initialised once, shut down once. ``available`` is False when no driver exists."""

    def __init__(self, lib: Any | None = None) -> None:
        self.available = False
        self._lib = lib
        try:
            if self._lib is None:
                import pynvml

                self._lib = pynvml
            self._lib.nvmlInit()
            self.available = True
        except Exception as exc:  # no driver, no library, no GPU: a CPU-only provider
            log.info("nvml.unavailable", reason=str(exc) or type(exc).__name__)

    def close(self) -> None:
        if self.available:
            try:
                self._lib.nvmlShutdown()
            finally:
                self.available = False

    def gpus(self) -> list[GpuInfo]:
        if not self.available:
            return []
        lib = self._lib
        out: list[GpuInfo] = []
        for i in range(lib.nvmlDeviceGetCount()):
            try:
                h = lib.nvmlDeviceGetHandleByIndex(i)
                major, minor = lib.nvmlDeviceGetCudaComputeCapability(h)
                try:
                    power = lib.nvmlDeviceGetPowerManagementLimit(h) / 1000.0
                except Exception:
                    power = None
                out.append(
                    GpuInfo(
                        index=i,
                        uuid=_text(lib.nvmlDeviceGetUUID(h)),
                        name=_text(lib.nvmlDeviceGetName(h)),
                        memory_total_mb=int(lib.nvmlDeviceGetMemoryInfo(h).total // (1 << 20)),
                        compute_capability=f"{major}.{minor}",
                        power_limit_w=power,
                    )
                )
            except Exception as exc:  # one failing GPU is reported unhealthy, never fatal
                log.warning("nvml.gpu_failed", index=i, error=str(exc))
                out.append(
                    GpuInfo(index=i, uuid="", name="unknown", memory_total_mb=0, healthy=False)
                )
        return out

    def versions(self) -> tuple[str | None, str | None]:
        if not self.available:
            return None, None
        driver = _text(self._lib.nvmlSystemGetDriverVersion())
        cuda = self._lib.nvmlSystemGetCudaDriverVersion()
        return driver, f"{cuda // 1000}.{(cuda % 1000) // 10}"

    def metrics(self) -> list[dict[str, Any]]:
        if not self.available:
            return []
        lib = self._lib
        out = []
        for i in range(lib.nvmlDeviceGetCount()):
            m: dict[str, Any] = {"index": i, "healthy": True}
            try:
                h = lib.nvmlDeviceGetHandleByIndex(i)
                util = lib.nvmlDeviceGetUtilizationRates(h)
                m["utilization_pct"] = float(util.gpu)
                m["memory_used_mb"] = lib.nvmlDeviceGetMemoryInfo(h).used / (1 << 20)
                m["temperature_c"] = float(
                    lib.nvmlDeviceGetTemperature(h, lib.NVML_TEMPERATURE_GPU)
                )
                m["power_draw_w"] = lib.nvmlDeviceGetPowerUsage(h) / 1000.0
            except Exception as exc:
                log.warning("nvml.metrics_failed", index=i, error=str(exc))
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
