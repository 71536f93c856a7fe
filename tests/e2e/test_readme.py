"""The README's walk-through, pasted as one block into bash against a real cluster, prints what
the README shows: each full-line ``# …`` comment under a command is its expected output, ``…``
standing for ids and times (the comments' fragments must appear in the output, in order)."""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

from localdev.cluster import LocalCluster

README = Path(__file__).resolve().parents[2] / "README.md"
SECTIONS = ("## Walk-through", "## Jobs")
DEV_GATEWAY = "GW=http://127.0.0.1:8080"


def _blocks() -> list[str]:
    text = README.read_text()
    blocks = []
    for heading in SECTIONS:
        start = text.index(heading)
        end = text.find("\n## ", start + 1)
        section = text[start : end if end > 0 else None]
        found = re.findall(r"```sh\n(.*?)```", section, re.S)
        assert found, f"no sh block under {heading}"
        blocks += found
    return blocks


def _expected(script: str) -> list[str]:
    return [line[2:] for line in script.splitlines() if line.startswith("# ")]


def _assert_in_order(output: str, expected: list[str]) -> None:
    pos = 0
    for line in expected:
        for fragment in (f for f in line.split("…") if f):
            found = output.find(fragment, pos)
            context = output[pos : pos + 2000]
            assert found >= 0, f"README shows {line!r}; {fragment!r} not in:\n{context}"
            pos = found + len(fragment)


def test_readme_walkthrough_prints_what_it_shows(
    default_cluster: LocalCluster, tmp_path: Path
) -> None:
    script = "\n".join(_blocks())
    assert script.count(DEV_GATEWAY) == 1
    # the cluster's own gateway, and a user of our own on the shared cluster
    user = f"a{uuid.uuid4().hex[:8]}"
    script = script.replace(DEV_GATEWAY, f"GW={default_cluster.gateway_url}")
    script = script.replace("alice", user)
    expected = _expected(script)
    assert len(expected) >= 10  # the README keeps showing its outputs
    assert "completed" in " ".join(expected) and "hello" in expected and "4" in expected
    # bash -e would stop at a failing curl; a broken step shows as missing output instead
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,  # a bound on a hung wait_job, not a speed assertion
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    _assert_in_order(done.stdout, expected)
    # the count job read the in.txt the walk-through made (four words, not an empty object)
    assert "\n4\n" in done.stdout
    assert (tmp_path / "in.txt").read_text() == "the quick brown fox\n"
