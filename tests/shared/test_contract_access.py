"""The job spec is read by attribute (``task.spec.params.script_content``), never by key.

A key lookup (``spec["resources"]``, ``params.get("docker_image")``) bypasses the typed
contract in ``shared/contracts.py``: its defaults, its validation and the type checker.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = (
    "api_gateway",
    "auth_service",
    "provider_registry",
    "scheduler",
    "storage_service",
    "provider_daemon",
)
KEYED = re.compile(
    r"""\b(?:spec|job_spec|params|resources)\s*(?:\[|\.get\(|\.setdefault\()  # spec["x"], .get(
      | \bspec\s+or\s+\{                                                  # (job.spec or {})
    """,
    re.VERBOSE,
)


def keyed_lookups(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if KEYED.search(line)]


def test_no_service_reads_a_job_spec_by_key() -> None:
    found = [
        f"{path.relative_to(ROOT)}: {line}"
        for package in SERVICES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
        for line in keyed_lookups(path.read_text())
    ]
    assert found == []


def test_the_grep_sees_the_shapes_it_forbids() -> None:
    code = """
        res = spec.get("resources") or {}
        image = params["docker_image"]
        cpu = task.spec.resources["cpu"]
        labels = (job.spec or {}).get("labels")
        fine = task.spec.params.script_content
        also_fine = query_params.get("x")
    """
    assert len(keyed_lookups(code)) == 4
