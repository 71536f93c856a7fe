"""The YAML job file's durations (``client/dante_client/jobfile.py``), in process: ``timeout``
and ``grace`` become the spec's seconds, and a bad one names its line."""

from __future__ import annotations

import pytest
from dante_client.errors import JobFileError
from dante_client.jobfile import parse

from shared.contracts import JobSpec

BASE = "name: t\nscript: echo hi\n"


def test_timeout_and_grace_become_seconds_the_platform_accepts() -> None:
    spec = parse(BASE + "timeout: 2h\ngrace: 90s\n").spec
    assert (spec["timeout_seconds"], spec["grace_seconds"]) == (7200, 90)
    assert JobSpec.model_validate(spec).grace_seconds == 90  # the gateway's own contract
    assert parse(BASE + "grace: 0\n").spec["grace_seconds"] == 0  # SIGKILL at once


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("grace: 2h", "<job>:3: grace: must be between 0 and 3600, got 7200"),
        ("grace: soon", "<job>:3: grace: expected seconds or e.g. 90s"),
        ("timeout: 0", "<job>:3: timeout: must be between 1 and 2592000, got 0"),
    ],
)
def test_a_bad_duration_names_its_line_and_field(line: str, message: str) -> None:
    with pytest.raises(JobFileError) as caught:
        parse(BASE + line + "\n")
    assert message in str(caught.value)
