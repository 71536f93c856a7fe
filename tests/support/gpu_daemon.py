"""``python -m tests.support.gpu_daemon``: the real provider daemon whose NVML handle is the
``create_autospec(pynvml)`` double of tests/daemon/test_nvml.py (two H100s at 87 % busy, 61 °C,
350.5 W, 10 of 80 GiB used). This machine has no NVIDIA GPU: only the library handle is
replaced; registration, heartbeats, task execution and /metrics are the daemon's own code.
"""

from __future__ import annotations

import asyncio
import os
import signal

from provider_daemon.agent import run
from provider_daemon.inventory import Nvml
from provider_daemon.settings import DaemonSettings
from shared.app import setup_logging
from tests.support.nvml import FakeGpu, fake_nvml


async def main() -> None:
    settings = DaemonSettings()
    setup_logging(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # DANTE_TEST_UNHEALTHY_GPUS="0": those GPUs have a page retirement pending (unhealthy)
    sick = {int(i) for i in os.environ.get("DANTE_TEST_UNHEALTHY_GPUS", "").split(",") if i}
    gpus = [FakeGpu(i, pending_retire=i in sick) for i in (0, 1)]
    await run(settings, stop, nvml=Nvml(fake_nvml(gpus)))


if __name__ == "__main__":
    asyncio.run(main())
