"""Find the binaries the operate tests run: Debian's ``prometheus`` package (promtool and the
server) and kubectl (its built-in kustomize). ``make tools`` installs the package; with
``CI=true`` a missing binary fails the run instead of skipping it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def binary(name: str, hint: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} not found: {hint}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def promtool() -> str:
    return binary("promtool", "run `make tools` (apt-get install prometheus)")


def prometheus() -> str:
    return binary("prometheus", "run `make tools` (apt-get install prometheus)")
