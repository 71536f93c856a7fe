"""``python -m localdev up`` (what ``make dev`` runs) as a real process, as a newcomer meets it:
it prints the console URL and a dev admin login that works, keeps the idle cluster quiet
(heartbeats at debug, no "Uvicorn running on <internal port>"), refuses a second launcher on
the same data dir, and on Ctrl-C lets the daemon finish its running job (and upload its log
through the gateway) before the services stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from auth_service.settings import DEV_ADMIN_PASSWORD
from tests.support.jobs import wait_status
from tests.support.wait import eventually

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 120.0  # start-up on a loaded 2-core VM; the bound only stops a hung run


def _up(data: Path, stderr: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "DANTE_SCHEDULER_SHUTDOWN_GRACE_SECONDS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "localdev", "up", "--data-dir", str(data), "--no-default-ports"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr.open("w"),
        text=True,
    )


def test_make_dev_as_a_newcomer_meets_it(tmp_path: Path) -> None:
    data, err = tmp_path / "dev", tmp_path / "up.err"
    launcher = _up(data, err)
    try:
        assert launcher.stdout is not None
        gw = launcher.stdout.readline().strip()  # printed once everything is ready
        assert gw.startswith("http://127.0.0.1:"), err.read_text()[-3000:]
        banner = err.read_text()
        assert banner.count("Dante is up.") == 1
        assert f"Console and API: {gw}/" in banner
        assert f"Admin login: admin / {DEV_ADMIN_PASSWORD}" in banner
        assert (data / "dev.lock").read_text().strip() == str(launcher.pid)

        # the printed login works
        login = httpx.post(
            f"{gw}/api/v1/auth/login", json={"username": "admin", "password": DEV_ADMIN_PASSWORD}
        )
        assert login.status_code == 200, login.text
        admin = {"authorization": f"Bearer {login.json()['access_token']}"}

        # a second launcher on the same data dir starts nothing and says why
        second = subprocess.run(
            [sys.executable, "-m", "localdev", "up", "--data-dir", str(data)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=LIMIT,
        )
        assert second.returncode == 1
        assert f"already in use by another `make dev` (pid {launcher.pid})" in second.stderr
        assert "Dante is up" not in second.stderr and second.stdout == ""
        assert launcher.poll() is None

        # idle: heartbeats arrive, and none of them is logged
        def beat() -> str:
            providers = httpx.get(f"{gw}/api/v1/providers", headers=admin).json()["providers"]
            return str(providers[0]["last_heartbeat_at"]) if providers else ""

        first = eventually(beat, limit=LIMIT)
        eventually(lambda: beat() not in ("", first), limit=LIMIT, what="a later heartbeat")
        eventually(lambda: beat() not in ("", first), limit=LIMIT)
        idle = err.read_text()
        assert "/heartbeat" not in idle and "HTTP Request:" not in idle
        assert "Uvicorn running on" not in idle

        # a job still running at Ctrl-C finishes, its log is uploaded through the gateway
        job_id = httpx.post(
            f"{gw}/api/v1/jobs",
            json={
                "type": "script",
                "name": "drain",
                "params": {"script_content": "echo started; sleep 3; echo finished"},
            },
            headers=admin,
        ).json()["job_id"]
        wait_status(gw, admin, job_id, "running")
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=LIMIT) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    out = err.read_text()
    assert out.index("daemon.stopped") < out.index("service.stopped")  # daemon first
    # the local-disk backend keeps it under the owner (jobs.d/<id>.d/attempt-1.log.o: the
    # bytes, then its metadata)
    logs = [
        p for p in (data / "objects").rglob("attempt-1.log*") if job_id in str(p) and p.is_file()
    ]
    assert len(logs) == 1 and logs[0].read_bytes().startswith(b"started\nfinished\n{"), out[-3000:]
    assert "Uvicorn running on" not in out
