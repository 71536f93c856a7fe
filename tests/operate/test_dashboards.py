"""Grafana dashboards and provisioning, linted without a Grafana (none installs here): the
fields Grafana's dashboard schema (v39) requires, a layout that fits its 24-column grid, the
provisioned datasource by uid, defined template variables, and the files up to date with
deploy/grafana/generate.py. Whether each query's metrics exist and each query runs in a real
Prometheus is checked in test_monitoring_live.py."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.operate import DEPLOY

GRAFANA = DEPLOY / "grafana"
BOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
PANEL_TYPES = {"timeseries", "stat", "gauge", "table", "bargauge", "heatmap", "text"}
BUILTIN_VARS = {"__rate_interval", "__interval", "__range"}


def provisioned_uid() -> str:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (only,) = ds["datasources"]
    assert only["type"] == "prometheus" and only["access"] == "proxy"
    return only["uid"]


def test_the_committed_dashboards_are_what_generate_writes() -> None:
    spec = importlib.util.spec_from_file_location("generate", GRAFANA / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered = module.render()
    assert (
        set(rendered)
        == {p.name for p in BOARDS}
        == {
            "overview.json",
            "job-pipeline.json",
            "gpu-fleet.json",
            "service-red.json",
        }
    )
    for path in BOARDS:
        assert path.read_text() == rendered[path.name], f"rerun deploy/grafana/generate.py ({path})"


def test_provisioning_points_at_the_dashboard_folder() -> None:
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dante.yml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_dashboard_lint(path: Path) -> None:
    board: dict[str, Any] = json.loads(path.read_text())
    uid = provisioned_uid()
    for key in ("uid", "title", "schemaVersion", "panels", "templating", "time"):
        assert key in board, key
    assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"])
    assert board["schemaVersion"] >= 36
    variables = {v["name"] for v in board["templating"]["list"]}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and board["panels"]
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["type"]
        assert panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        refs = [t["refId"] for t in panel["targets"]]
        assert panel["targets"] and len(refs) == len(set(refs))
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == uid
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
            for var in re.findall(r"\$(\w+)", t["expr"]):
                assert var in variables | BUILTIN_VARS, f"{panel['title']}: ${var} undefined"


def test_dashboard_uids_are_unique() -> None:
    uids = [json.loads(p.read_text())["uid"] for p in BOARDS]
    assert len(uids) == len(set(uids))
