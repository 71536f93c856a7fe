"""What the client tests share: the ``dante`` CLI run as a subprocess for one account
(``Cli``), direct gateway calls as that account (``Api``), and restarting the gateway of a
local cluster. The cluster itself is the ``cluster`` fixture in ``tests/client/conftest.py``.

Access tokens live ``ACCESS_TTL`` seconds there (the auth service's
``DANTE_AUTH_ACCESS_TTL_SECONDS``), so every test that lasts longer than that also exercises the
client's refresh-token rotation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from localdev.cluster import SERVICES, LocalCluster
from tests.support.accounts import PASSWORD, new_user
from tests.support.wait import eventually

ACCESS_TTL = 10  # seconds
DANTE = shutil.which("dante", path=str(Path(sys.executable).parent)) or "dante"
TERMINAL = {"completed", "failed", "cancelled", "timed_out"}


def restart_gateway(cluster: LocalCluster) -> None:
    """Stop only the gateway process and start it again on the same port."""
    proc = next(p for p in cluster.procs if p.name == "gateway")
    proc.popen.terminate()
    proc.popen.wait(30)
    if proc.log:
        proc.log.close()
    cluster.procs.remove(proc)
    _, package, prefix, _ = next(s for s in SERVICES if s[0] == "gateway")
    env = cluster._env(prefix, "gateway")
    if cluster.nats_creds:
        env["DANTE_NATS_CREDS"] = str(cluster.nats_creds)
    new = cluster._spawn("gateway", [sys.executable, "-m", package, "serve"], env, proc.port)
    cluster._wait_ready(new, time.monotonic() + 60)


@dataclass
class Cli:
    """The ``dante`` command for one account, with its own config dir."""

    url: str
    home: Path
    username: str = ""
    password: str = PASSWORD

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DANTE_")}
        env.update(
            DANTE_URL=self.url,
            DANTE_CONFIG_DIR=str(self.home / "config"),
            COLUMNS="200",
            NO_COLOR="1",
        )
        env.update(extra)
        return env

    def run(
        self, *args: str, input: str | None = None, cwd: Path | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DANTE, *args],
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            cwd=cwd or self.home,
            timeout=timeout,
        )

    def ok(self, *args: str, **kw: Any) -> str:
        r = self.run(*args, **kw)
        assert r.returncode == 0, (args, r.returncode, r.stdout, r.stderr)
        return r.stdout

    def json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self.ok(*args, "--json", **kw))

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [DANTE, *args],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.home,
            **kw,
        )

    def credentials(self) -> dict[str, Any]:
        return json.loads((self.home / "config" / "credentials.json").read_text())

    def login(self) -> None:
        self.ok("login", "--user", self.username, "--password-stdin", input=self.password + "\n")


def make_cli(cluster: LocalCluster, tmp: Path, role: str = "requester") -> Cli:
    user = new_user(cluster.gateway_url, role)
    home = tmp / f"home-{uuid.uuid4().hex[:6]}"
    home.mkdir()
    cli = Cli(cluster.gateway_url, home, user["username"])
    cli.login()
    return cli


def job_file(directory: Path, name: str, body: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(body)
    return path


class Api:
    """Direct gateway calls as the CLI's account (to check what the CLI did), logging in
    again whenever the short-lived access token has expired."""

    def __init__(self, cli: Cli) -> None:
        self.cli = cli
        self.headers: dict[str, str] = {}

    def _login(self) -> None:
        r = httpx.post(
            f"{self.cli.url}/api/v1/auth/login",
            json={"username": self.cli.username, "password": self.cli.password},
        )
        r.raise_for_status()
        self.headers = {"authorization": f"Bearer {r.json()['access_token']}"}

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        if not self.headers:
            self._login()
        r = httpx.request(method, f"{self.cli.url}{path}", headers=self.headers, **kw)
        if r.status_code == 401:
            self._login()
            r = httpx.request(method, f"{self.cli.url}{path}", headers=self.headers, **kw)
        return r

    def job(self, job_id: str) -> dict[str, Any] | None:
        r = self.request("GET", f"/api/v1/jobs/{job_id}")
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def wait_state(self, job_id: str, states: set[str], limit: float = 90) -> dict[str, Any]:
        """Wait until the job reaches one of ``states``; the bound only stops a hung run."""

        def reached() -> dict[str, Any]:
            job = self.job(job_id)
            assert job and job["status"] in states, f"job {job_id} not in {states}: {job}"
            return job

        return eventually(reached, limit=limit, interval=0.2)
