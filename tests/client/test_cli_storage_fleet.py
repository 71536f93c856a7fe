"""cp / ls / rm, providers / gpus / usage through the real CLI and a real cluster."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from localdev.cluster import LocalCluster
from tests.support.accounts import provider_key
from tests.support.client import DANTE, Api, Cli, job_file, make_cli

pytestmark = pytest.mark.e2e

MiB = 1 << 20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(MiB):
            h.update(chunk)
    return h.hexdigest()


# A tiny parent that spawns the CLI and reports that child's own rusage. Spawned straight from
# pytest, the child's ru_maxrss would start at pytest's size: the high-water mark of the
# forked (vforked) image survives exec on Linux.
_LAUNCHER = """
import json, os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    json.dump({"rc": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss}, fh)
"""


def _peak_rss_mb(cli: Cli, *args: str) -> float:
    """Run the CLI and return that one process's peak RSS, from its own rusage."""
    report = cli.home / "rusage.json"
    done = subprocess.run(
        [sys.executable, "-S", "-c", _LAUNCHER, str(report), DANTE, *args],
        env=cli.env(),
        cwd=cli.home,
        capture_output=True,
        text=True,
        timeout=600,
    )
    result = json.loads(report.read_text())
    assert result["rc"] == 0, done.stderr
    return result["maxrss_kb"] / 1024


def test_cp_200_mb_round_trip_in_constant_memory(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    with src.open("wb") as fh:
        for _ in range(200):
            fh.write(os.urandom(MiB))
    up_mb = _peak_rss_mb(cli, "cp", str(src), "dante:big/big.bin")
    listed = cli.json("ls", "big/")
    assert [(o["key"], o["size"]) for o in listed] == [("big/big.bin", 200 * MiB)]

    dst = tmp_path / "back.bin"
    down_mb = _peak_rss_mb(cli, "cp", "dante:big/big.bin", str(dst))
    assert _sha256(dst) == _sha256(src)
    # 200 MB went each way; the process never held more than a small part of it
    assert up_mb < 100, up_mb
    assert down_mb < 100, down_mb
    print(f"peak RSS: cp up {up_mb:.1f} MB, cp down {down_mb:.1f} MB")

    cli.ok("rm", "dante:big/big.bin")
    assert cli.json("ls", "big/") == []


def test_download_resumes_from_a_partial_file(cli: Cli, tmp_path: Path) -> None:
    """A part left by an interrupted download is continued with a Range request: proved by a
    part whose bytes differ from the object's (a fresh download would overwrite them)."""
    data = os.urandom(3 * MiB)
    (tmp_path / "obj.bin").write_bytes(data)
    cli.ok("cp", str(tmp_path / "obj.bin"), "dante:resume/obj.bin")
    etag = Api(cli).request("HEAD", "/api/v1/storage/objects/resume/obj.bin").headers["etag"]
    dst = tmp_path / "out" / "obj.bin"
    dst.parent.mkdir()
    tag = hashlib.sha256(etag.strip('"').encode()).hexdigest()[:12]
    half = len(data) // 2
    (dst.parent / f".obj.bin.{tag}.part").write_bytes(b"\0" * half)
    cli.ok("cp", "dante:resume/obj.bin", str(dst.parent) + "/")
    assert dst.read_bytes() == b"\0" * half + data[half:]
    assert not list(dst.parent.glob(".*.part"))


def test_ls_rm_and_bad_cp_usage(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha\n")
    cli.ok("cp", str(tmp_path / "a.txt"), "dante:docs/")
    assert [o["key"] for o in cli.json("ls", "docs/")] == ["docs/a.txt"]
    assert "docs/a.txt" in cli.ok("ls")
    r = cli.run("cp", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"))
    assert r.returncode == 2 and "exactly one of SRC and DST" in r.stderr
    cli.ok("rm", "docs/a.txt")
    r = cli.run("rm", "docs/a.txt")
    assert r.returncode == 2 and "error:" in r.stderr


def test_providers_gpus_and_usage(cluster: LocalCluster, cli: Cli, tmp_path: Path) -> None:
    # A GPU host registered through the public API, as a daemon on one would (no NVIDIA GPU
    # here: the host's inventory is what a daemon would report from NVML).
    key = provider_key(cluster.gateway_url)
    token = httpx.post(f"{cli.url}/api/v1/auth/token", json={"api_key": key["api_key"]})
    headers = {"authorization": f"Bearer {token.json()['access_token']}"}
    host = {
        "name": "gpu-host-test",
        "cpu_count": 32,
        "gpus": [
            {
                "index": i,
                "uuid": f"GPU-{i}",
                "name": "NVIDIA H100 80GB HBM3",
                "memory_total_mb": 81559,
            }
            for i in range(2)
        ],
    }
    reg = httpx.post(f"{cli.url}/api/v1/providers", json=host, headers=headers)
    assert reg.status_code in (200, 201), reg.text

    providers = cli.json("providers")
    names = {p["name"]: p for p in providers}
    assert names["gpu-host-test"]["id"] == key["provider_id"]
    assert len(names["gpu-host-test"]["gpus"]) == 2
    assert "gpu-host-test" in cli.ok("providers")

    gpus = [g for g in cli.json("gpus") if g["provider_id"] == key["provider_id"]]
    assert [(g["index"], g["model"], g["vram_mb"], g["busy"]) for g in gpus] == [
        (0, "NVIDIA H100 80GB HBM3", 81559, False),
        (1, "NVIDIA H100 80GB HBM3", 81559, False),
    ]
    table = cli.ok("gpus")
    assert "H100" in table and "free" in table

    spec = job_file(tmp_path, "use", "name: use\nscript: echo used\n")
    cli.ok("run", str(spec))
    usage = cli.json("usage")
    assert usage["scope"] == "requester"
    assert usage["totals"]["jobs"] >= 1 and len(usage["records"]) >= 1
    assert cli.json("usage", "--since", "1d")["totals"]["jobs"] >= 1
    shown = cli.ok("usage")
    assert "requester" in shown and "HOST" in shown
    assert usage["records"][0]["provider_id"][:8] in shown  # each record names its host
    r = cli.run("usage", "--since", "yesterday-ish")
    assert r.returncode == 2 and "--since" in r.stderr

    provider = make_cli(cluster, tmp_path, role="provider")
    assert provider.json("usage")["scope"] == "provider"


def test_example_training_job_uploads_runs_and_downloads(cli: Cli, tmp_path: Path) -> None:
    """examples/train.yaml: its local input is uploaded, the loss streams, the weights come back."""
    example = Path(__file__).resolve().parents[2] / "examples" / "train.yaml"
    out = cli.ok("run", str(example), "--outputs-dir", str(tmp_path / "results"))
    lines = out.splitlines()
    assert lines[0] == "loaded 200 samples"
    assert [line.split()[1] for line in lines if line.startswith("epoch")] == [
        f"{i}/5" for i in range(1, 6)
    ]
    model = json.loads((tmp_path / "results" / "out" / "model.json").read_text())
    assert abs(model["w"] - 3.0) < 0.2 and abs(model["b"] - 0.5) < 0.2  # the data's y = 3x + 0.5
