"""A service as a real process (``python -m <package> serve``) on a free port, and its wait."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.servers import free_port, spawned
from tests.support.wait import eventually_async

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def service_process(
    package: str, prefix: str, db_url: str, nats_url: str, log_path: Path, **settings: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python -m <package> serve`` in dev mode with JSON logs; ``settings`` become
    ``<prefix><NAME>`` variables."""
    port = free_port()
    env = {
        **os.environ,
        f"{prefix}PORT": str(port),
        f"{prefix}DATABASE_URL": db_url,
        f"{prefix}NATS_URL": nats_url,
        f"{prefix}ENVIRONMENT": "dev",
        f"{prefix}LOG_JSON": "true",
        **{f"{prefix}{k.upper()}": v for k, v in settings.items()},
    }
    with spawned([sys.executable, "-m", package, "serve"], env, log_path, cwd=ROOT) as proc:
        yield proc, port


async def wait_process_ready(
    proc: subprocess.Popen[bytes], port: int, what: str, limit: float = 60
) -> None:
    """Until ``/ready`` answers 200; fails at once if the process exits."""
    async with httpx.AsyncClient() as http:

        async def ready() -> bool:
            assert proc.poll() is None, f"{what} exited with {proc.returncode}"
            with contextlib.suppress(httpx.HTTPError):
                return (await http.get(f"http://127.0.0.1:{port}/ready")).status_code == 200
            return False

        await eventually_async(ready, limit=limit, interval=0.2, what=f"{what} ready")
