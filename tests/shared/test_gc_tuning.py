"""A served service runs with the collector tuned (shared/gc_tuning.py): its start-up heap
frozen out of collections, a large young generation. Without it a full collection stalled the
gateway's requests in flight for ~100 ms at 1,500 submissions/s (issue 12). Checked in a child
process: freezing the test process's own heap is not this test's business."""

from __future__ import annotations

import json
import subprocess
import sys

from shared.gc_tuning import GC_THRESHOLDS

CHILD = """
import gc, json
import uvicorn
from shared.app import serve
from shared.settings import ServiceSettings
from fastapi import FastAPI

before = {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}
seen = {}

def run(app, **kwargs):  # the state uvicorn would start serving with
    seen.update(threshold=gc.get_threshold(), frozen=gc.get_freeze_count())

uvicorn.run = run
serve(FastAPI(), ServiceSettings(service_name="gc-test"))
print(json.dumps({"before": before, "serving": seen}))
"""


def test_a_served_service_collects_rarely_and_never_its_start_up_heap() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert tuple(got["before"]["threshold"]) != GC_THRESHOLDS  # Python's defaults until served
    assert got["before"]["frozen"] == 0
    assert tuple(got["serving"]["threshold"]) == GC_THRESHOLDS
    # the modules, the app and the settings are out of every collection's way
    assert got["serving"]["frozen"] > 10_000
