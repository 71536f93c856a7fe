"""A throwaway PostgreSQL a test may stop and start again (an outage), never the shared one."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import free_port


def _prefix() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@dataclass
class ControlledPostgres:
    data: Path
    root: Path
    port: int
    pg_ctl: str

    @property
    def url(self) -> str:
        """libpq URL of its ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*_prefix(), self.pg_ctl, "-D", str(self.data), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", opts, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: every connection is cut, as a restart or failover does."""
        self._ctl("-m", mode, "-w", "stop")


@contextlib.contextmanager
def controlled_postgres() -> Iterator[ControlledPostgres]:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        raise RuntimeError("initdb/pg_ctl not found")
    root = Path(tempfile.mkdtemp(prefix="dante-pg-outage-"))
    if _prefix():
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    subprocess.run(
        [*_prefix(), initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    pg = ControlledPostgres(data, root, free_port(), pg_ctl)
    pg.start()
    try:
        yield pg
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
