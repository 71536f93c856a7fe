"""Every command's --help shows examples; completion is available. No cluster needed, so these
run in-process (typer's runner) rather than as 26 interpreter start-ups."""

from __future__ import annotations

import subprocess

import pytest
from dante_client.cli import app
from typer.testing import CliRunner

from tests.support.client import DANTE

COMMANDS = [
    ["login"], ["logout"], ["whoami"], ["register"], ["run"], ["submit"], ["ps"], ["status"],
    ["events"], ["logs"], ["cancel"], ["rerun"], ["cp"], ["ls"], ["rm"], ["providers"],
    ["gpus"], ["usage"], ["keys", "create"], ["keys", "list"], ["keys", "revoke"],
    ["admin", "users"], ["admin", "role"], ["admin", "disable"], ["admin", "enable"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_help_has_examples(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert f"dante {command[0]}" in result.output


def test_shell_completion_script() -> None:
    done = subprocess.run([DANTE, "--show-completion", "bash"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "complete" in done.stdout and "dante" in done.stdout
