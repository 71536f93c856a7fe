"""``dante run`` on a real terminal (tmux): the progress bar and the live log render, colour is
on, and Ctrl-C detaches without cancelling the job and says how to reattach."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.client import DANTE, Api, Cli
from tests.support.wait import eventually

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


class Tmux:
    """A private tmux server (its own socket) with one 160x50 window running bash."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.socket = f"dante-test-{uuid.uuid4().hex[:8]}"
        args = ["new-session", "-d", "-s", "t", "-x", "160", "-y", "50", "-c", str(cwd)]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        self.tmux(*args, "bash --norc --noprofile")

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def send(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def screen(self, escapes: bool = False) -> str:
        return self.tmux(
            "capture-pane", "-p", "-t", "t", "-S", "-200", *(["-e"] if escapes else [])
        )

    def showing(self, check: Callable[[str], bool], what: str) -> str:
        """The screen now, if ``check`` holds on it (wait with ``eventually``)."""
        text = self.screen()
        assert check(text), f"never saw {what}; screen:\n{text}"
        return text

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def tmux(cli: Cli) -> Iterator[Tmux]:
    env = cli.env()
    env.pop("NO_COLOR", None)
    env.pop("COLUMNS", None)
    wanted = {k: v for k, v in env.items() if k.startswith("DANTE_") or k in ("PATH", "HOME")}
    session = Tmux({**wanted, "TERM": "xterm-256color"}, cli.home)
    yield session
    session.close()


def test_run_on_a_tty_shows_progress_and_live_log_and_ctrl_c_detaches(
    cli: Cli, tmux: Tmux, tmp_path: Path
) -> None:
    data = cli.home / "data.bin"
    with data.open("wb") as fh:
        for _ in range(24):
            fh.write(os.urandom(1 << 20))
    gate = tmp_path / "gate"
    (cli.home / "tty.yaml").write_text(
        "name: tty\n"
        "inputs:\n  - {src: data.bin, key: tty/data.bin}\n"
        "script: |\n"
        '  echo "live line one"\n'
        f"  while [ ! -e {gate} ]; do sleep 0.1; done\n"
        '  echo "after the gate"\n'
    )
    tmux.send(f"{DANTE} run tty.yaml", "Enter")
    screen = eventually(
        lambda: tmux.showing(lambda s: "live line one" in s, "the live log line"),
        limit=120,
        interval=0.2,
    )
    # the upload's progress bar was drawn (a finished bar stays on screen) with its sizes
    assert "━" in screen and "24.0/24.0 MiB" in screen, screen
    assert "submitted" in screen and "running" in screen
    assert "\x1b[" in tmux.screen(escapes=True)  # colour on a terminal

    job_id = next(line for line in screen.splitlines() if "submitted" in line).split()[1]
    tmux.send("C-c")
    screen = eventually(
        lambda: tmux.showing(lambda s: "Detached" in s, "the detach message"),
        limit=120,
        interval=0.2,
    )
    assert f"dante logs -f {job_id}" in screen
    assert "keeps running" in screen

    api = Api(cli)
    job = api.job(job_id)
    assert job is not None and job["status"] == "running"  # Ctrl-C did not cancel it
    tmux.send(f"{DANTE} logs -f {job_id}", "Enter")  # reattach as told
    eventually(
        lambda: tmux.showing(lambda s: s.count("live line one") >= 2, "the reattached log"),
        limit=120,
        interval=0.2,
    )
    gate.touch()
    eventually(
        lambda: tmux.showing(lambda s: "after the gate" in s, "the line after the gate"),
        limit=120,
        interval=0.2,
    )
    assert (
        api.wait_state(job_id, {"completed", "failed", "cancelled", "timed_out"})["status"]
        == "completed"
    )


def test_piped_output_has_no_colour(cli: Cli) -> None:
    env = cli.env()
    env.pop("NO_COLOR")
    done = subprocess.run(
        [DANTE, "ps"], env=env, capture_output=True, text=True, cwd=cli.home, timeout=60
    )
    assert done.returncode == 0
    assert "\x1b[" not in done.stdout + done.stderr


def test_ps_watch_redraws_until_ctrl_c(cli: Cli, tmux: Tmux, tmp_path: Path) -> None:
    (cli.home / "w.yaml").write_text("name: watched\nscript: echo watched\n")
    job_id = cli.json("submit", "w.yaml")["job_id"]
    Api(cli).wait_state(job_id, {"completed"})
    tmux.send(f"{DANTE} ps --watch", "Enter")
    eventually(
        lambda: tmux.showing(lambda s: "watched" in s and "completed" in s, "the watched job"),
        limit=120,
        interval=0.2,
    )
    tmux.send("C-c")
    tmux.send("echo watch-ended-$?", "Enter")
    eventually(
        lambda: tmux.showing(lambda s: "watch-ended-0" in s, "ps --watch to end on Ctrl-C"),
        limit=120,
        interval=0.2,
    )
