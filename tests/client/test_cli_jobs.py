"""The ``dante`` CLI as a subprocess against a real local cluster: accounts, jobs, logs.

Jobs that must be caught "while running" wait for a file the test creates, so nothing here
depends on timing: the test reads a line, checks the state, then lets the job go on.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from localdev.cluster import LocalCluster
from tests.support.client import (
    ACCESS_TTL,
    DANTE,
    TERMINAL,
    Api,
    Cli,
    job_file,
    make_cli,
    restart_gateway,
)
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e


def _gate(path: Path) -> str:
    """Shell that blocks until ``path`` exists (the test's go signal)."""
    return f"while [ ! -e {path} ]; do sleep 0.1; done"


def _read_line(stream, want: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Lines from a pipe up to and including ``want`` (blocks until it arrives)."""
    seen = []
    for raw in stream:
        seen.append(raw.rstrip("\n"))
        if seen[-1] == want:
            return seen
    raise AssertionError(f"stream ended before {want!r}: {seen}")


def _exp(token: str) -> float:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]


# --- accounts -----------------------------------------------------------------------------------


def test_login_whoami_logout(cli: Cli) -> None:
    path = cli.home / "config" / "credentials.json"
    assert path.stat().st_mode & 0o777 == 0o600
    me = cli.json("whoami")
    assert me["username"] == cli.username and me["role"] == "requester"
    refresh = cli.credentials()["refresh_token"]

    cli.ok("logout")
    assert not path.exists()
    r = cli.run("whoami")
    assert r.returncode == 2
    assert "not logged in" in r.stderr and "dante login" in r.stderr
    # the server ended the session too: its refresh token no longer works
    spent = httpx.post(f"{cli.url}/api/v1/auth/refresh", json={"refresh_token": refresh})
    assert spent.status_code == 401


def test_wrong_password_and_unreachable_gateway_are_clear(cli: Cli) -> None:
    r = cli.run("login", "-u", cli.username, "--password-stdin", input="wrong password\n")
    assert r.returncode == 2 and "error:" in r.stderr
    cli.url = "http://127.0.0.1:9"  # nothing listens on the discard port
    r = cli.run("whoami")
    assert r.returncode == 2
    assert "cannot reach the gateway" in r.stderr and "gateway running" in r.stderr


def test_token_refresh_mid_session(cli: Cli, tmp_path: Path) -> None:
    """The access token expires while ``dante run`` follows a job: the same process renews it
    (rotating the refresh token, stored back at 0600) and finishes normally."""
    first = cli.credentials()
    go = tmp_path / "go"
    spec = job_file(
        tmp_path, "long", f"name: long\nscript: |\n  echo before\n  {_gate(go)}\n  echo after\n"
    )
    run = cli.popen("run", str(spec))
    assert run.stdout is not None
    _read_line(run.stdout, "before")
    # wait until the access token is past its expiry (a condition, not a timed assertion)
    eventually(
        lambda: time.time() > _exp(first["access_token"]) + 1,
        limit=ACCESS_TTL + 60,
        interval=0.2,
    )
    go.touch()
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert out.splitlines() == ["after"]
    now = cli.credentials()
    assert now["refresh_token"] != first["refresh_token"]
    assert now["access_token"] != first["access_token"]
    assert (cli.home / "config" / "credentials.json").stat().st_mode & 0o777 == 0o600
    # rotation: the first refresh token is spent
    spent = httpx.post(
        f"{cli.url}/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert spent.status_code == 401
    assert ACCESS_TTL < 60  # the cluster really runs with short-lived tokens


def test_a_dead_session_says_to_log_in_and_dante_token_overrides(cli: Cli) -> None:
    creds = cli.credentials()
    path = cli.home / "config" / "credentials.json"
    path.write_text(json.dumps({**creds, "access_token": "expired", "refresh_token": "spent"}))
    r = cli.run("whoami")
    assert r.returncode == 2
    assert "dante login" in r.stderr  # the hint on a 401 that no refresh can fix

    path.unlink()
    fresh = httpx.post(
        f"{cli.url}/api/v1/auth/login", json={"username": cli.username, "password": cli.password}
    )
    access = fresh.json()["access_token"]  # lives 10 s: used at once
    env_run = subprocess.run(
        [DANTE, "whoami", "--json"],
        env=cli.env(DANTE_TOKEN=access),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert env_run.returncode == 0, env_run.stderr
    assert json.loads(env_run.stdout)["username"] == cli.username


# --- run / submit -------------------------------------------------------------------------------


def test_run_prints_live_lines_and_exits_0(cli: Cli, tmp_path: Path) -> None:
    go = tmp_path / "go"
    spec = job_file(
        tmp_path,
        "live",
        f"name: live\nscript: |\n  echo first line\n  {_gate(go)}\n  echo second line\n",
    )
    run = cli.popen("run", str(spec))
    assert run.stdout is not None
    assert _read_line(run.stdout, "first line") == ["first line"]
    # the line arrived while the job was still running (it is waiting for us)
    (job,) = cli.json("ps")
    assert Api(cli).wait_state(job["job_id"], {"running", *TERMINAL})["status"] == "running"
    go.touch()
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert out.splitlines() == ["second line"]
    assert "completed" in err and "running" in err


def test_run_propagates_exit_code_3(cli: Cli, tmp_path: Path) -> None:
    spec = job_file(
        tmp_path, "three", "name: three\nscript: echo about to fail; exit 3\nretries: 0\n"
    )
    r = cli.run("run", str(spec))
    assert r.returncode == 3, r.stderr
    assert r.stdout.splitlines() == ["about to fail"]
    assert "failed" in r.stderr
    r = cli.run("run", str(spec), "--json")  # stdout: only the final job, as JSON
    assert r.returncode == 3
    job = json.loads(r.stdout)
    assert (job["status"], job["exit_code"]) == ("failed", 3)
    assert "about to fail" in r.stderr


def test_timeout_and_cancel_have_their_own_exit_codes(cli: Cli, tmp_path: Path) -> None:
    slow = job_file(tmp_path, "slow", "name: slow\nscript: sleep 120\ntimeout: 1\nretries: 0\n")
    r = cli.run("run", str(slow))
    assert r.returncode == 124, r.stderr
    assert "timed_out" in r.stderr

    go = tmp_path / "never"
    spec = job_file(tmp_path, "wait", f"name: wait\nscript: |\n  echo waiting\n  {_gate(go)}\n")
    run = cli.popen("run", str(spec))
    assert run.stdout is not None
    _read_line(run.stdout, "waiting")
    job_id = cli.json("ps")[0]["job_id"]
    Api(cli).wait_state(job_id, {"running"})
    answer = cli.json("cancel", job_id)
    assert answer[0]["job_id"] == job_id
    _, err = run.communicate(timeout=120)
    assert run.returncode == 125, err
    assert "cancelled" in err
    assert cli.json("status", job_id)["status"] == "cancelled"


def test_yaml_errors_name_their_line(cli: Cli, tmp_path: Path) -> None:
    bad_type = job_file(
        tmp_path, "bad", "name: bad\nscript: echo hi\nresources:\n  gpu_count: two\n"
    )
    r = cli.run("run", str(bad_type))
    assert r.returncode == 2
    assert f"{bad_type}:4: resources.gpu_count: expected an integer" in r.stderr

    unknown = job_file(tmp_path, "unknown", "name: u\nscript: echo hi\n\ngpus: 2\n")
    r = cli.run("submit", str(unknown))
    assert r.returncode == 2 and f"{unknown}:4: gpus: unknown field" in r.stderr

    broken = job_file(tmp_path, "broken", "name: b\nscript: [echo hi\npriority: 3\n")
    r = cli.run("run", str(broken))
    assert r.returncode == 2 and f"{broken}:3: not valid YAML" in r.stderr
    assert cli.json("ps") == []  # nothing was submitted


def test_submit_then_ps_status_events_logs(cli: Cli, tmp_path: Path) -> None:
    spec = job_file(
        tmp_path,
        "hello",
        "name: hello\nscript: |\n  echo hello\n  echo world\ntags: [nightly]\npriority: 7\n",
    )
    sub = cli.json("submit", str(spec))
    assert sub["status"] == "queued"
    job_id = sub["job_id"]
    Api(cli).wait_state(job_id, {"completed"})

    listed = cli.json("ps")
    assert [j["job_id"] for j in listed] == [job_id]
    assert cli.json("ps", "--state", "failed") == []
    assert [j["job_id"] for j in cli.json("ps", "--tag", "nightly")] == [job_id]
    table = cli.ok("ps")
    assert job_id in table and "completed" in table

    status = cli.json("status", job_id)
    assert status["exit_code"] == 0 and status["priority"] == 7 and status["tags"] == ["nightly"]
    assert job_id in cli.ok("status", job_id)
    states = [e["to"] for e in cli.json("events", job_id)]
    assert states == ["queued", "dispatched", "running", "completed"]
    assert cli.ok("logs", job_id).splitlines() == ["hello", "world"]
    assert cli.ok("logs", "-f", job_id).splitlines() == ["hello", "world"]

    r = cli.run("status", "00000000-0000-0000-0000-000000000000")
    assert r.returncode == 2 and "not found" in r.stderr


def test_rerun_submits_the_same_job_again(cluster: LocalCluster, cli: Cli, tmp_path: Path) -> None:
    spec = job_file(tmp_path, "again", "name: again\nscript: echo run $((6*7))\nenv: {A: b}\n")
    first = cli.json("submit", str(spec))["job_id"]
    api = Api(cli)
    api.wait_state(first, {"completed"})
    second = cli.json("rerun", first)["job_id"]
    assert second != first
    job = api.wait_state(second, {"completed"})
    assert job["name"] == "again"
    assert cli.ok("logs", second).splitlines() == ["run 42"]
    stranger = make_cli(cluster, tmp_path)  # another requester cannot read or rerun it
    r = stranger.run("rerun", first)
    assert r.returncode == 2 and "not found" in r.stderr


def test_logs_follow_resumes_across_a_gateway_restart(
    cluster: LocalCluster, cli: Cli, tmp_path: Path
) -> None:
    """Lines written while the gateway is down arrive once each after it is back."""
    go1, go2, mid = tmp_path / "go1", tmp_path / "go2", tmp_path / "printed"
    script = "\n".join(
        [
            "for i in $(seq 1 10); do echo line $i; done",
            _gate(go1),
            "for i in $(seq 11 20); do echo line $i; sleep 0.05; done",
            f"touch {mid}",
            _gate(go2),
            "for i in $(seq 21 30); do echo line $i; done",
        ]
    )
    spec = tmp_path / "resume.yaml"
    spec.write_text(json.dumps({"name": "resume", "script": script}))  # JSON is YAML
    job_id = cli.json("submit", str(spec))["job_id"]
    follow = cli.popen("logs", "-f", job_id)
    assert follow.stdout is not None
    _read_line(follow.stdout, "line 10")

    gateway = next(p for p in cluster.procs if p.name == "gateway")
    gateway.popen.terminate()
    gateway.popen.wait(30)
    go1.touch()  # lines 11-20 are written while no gateway runs
    eventually(mid.exists, interval=0.1, what="the job writing its mid-point file")
    restart_gateway(cluster)
    go2.touch()
    out, err = follow.communicate(timeout=180)
    assert follow.returncode == 0, err
    lines = [f"line {i}" for i in range(1, 31)]
    assert out.splitlines() == lines[10:]
    assert cli.ok("logs", job_id).splitlines() == lines


# --- admin and provider keys --------------------------------------------------------------------


def test_keys_create_list_revoke(cluster: LocalCluster, tmp_path: Path) -> None:
    provider = make_cli(cluster, tmp_path, role="provider")
    key = provider.json("keys", "create", "--name", "host-1")
    assert key["api_key"].startswith("dk_") and key["name"] == "host-1"
    token = httpx.post(f"{provider.url}/api/v1/auth/token", json={"api_key": key["api_key"]})
    assert token.status_code == 200
    listed = provider.json("keys", "list")
    assert [k["key_id"] for k in listed] == [key["key_id"]]
    assert "api_key" not in listed[0]
    provider.ok("keys", "revoke", key["key_id"])
    assert provider.json("keys", "list")[0]["revoked_at"]
    token = httpx.post(f"{provider.url}/api/v1/auth/token", json={"api_key": key["api_key"]})
    assert token.status_code == 401


def test_requester_gets_a_clear_403(cli: Cli) -> None:
    r = cli.run("keys", "create")
    assert r.returncode == 2
    assert "role" in r.stderr  # the hint: your role does not allow this


def test_admin_users_role_disable(cluster: LocalCluster, cli: Cli, tmp_path: Path) -> None:
    admin = Cli(cluster.gateway_url, tmp_path / "admin", "admin", "dante-dev-admin")
    admin.home.mkdir()
    admin.login()
    assert admin.json("whoami")["role"] == "admin"
    users = admin.json("admin", "users", "--query", cli.username)
    assert [u["username"] for u in users] == [cli.username]
    assert admin.json("admin", "role", cli.username, "provider")["role"] == "provider"
    assert admin.json("admin", "disable", cli.username)["active"] is False
    # refused everywhere within the revocation poll (~5 s): wait for the condition
    eventually(
        lambda: cli.run("whoami").returncode != 0,
        interval=0.5,
        what="a disabled user being refused",
    )
    assert admin.json("admin", "enable", cli.username)["active"] is True
    providers = admin.json("admin", "users", "--role", "provider", "--query", cli.username)
    assert [(u["username"], u["active"]) for u in providers] == [(cli.username, True)]
