"""The shipped Prometheus configuration and alert rules, checked by the real promtool.

Debian's prometheus build (the only one installable here) leaves out the Consul and Kubernetes
service-discovery plugins (its changelog: "Disable Consul SD until its Debian package is back in
shape"), so its promtool refuses those two blocks as unknown fields. Each config is therefore
checked twice: promtool validates everything else (globals, rule files, relabelling, the other
discovery kinds) with each Consul/Kubernetes block swapped for an equivalent file_sd block, and
the swapped-out blocks are checked here against the fields Prometheus documents for them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.operate import DEPLOY, promtool

PROM = DEPLOY / "prometheus"
RULES = sorted((PROM / "rules").glob("*.yml"))
SD_FIELDS = {
    "consul_sd_configs": {"server", "services", "refresh_interval", "tags", "datacenter"},
    "kubernetes_sd_configs": {"role", "namespaces", "selectors", "api_server"},
}
ROLES = {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}
SERVICES = {"auth", "registry", "scheduler", "storage", "gateway"}


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), "check", *args], capture_output=True, text=True, timeout=60)


def swap_unsupported_sd(config: dict[str, Any], tmp: Path) -> list[tuple[str, dict[str, Any]]]:
    """Replace Consul/Kubernetes SD blocks by file_sd ones; return what was swapped out."""
    swapped = []
    for job in config["scrape_configs"]:
        for key in SD_FIELDS:
            for block in job.pop(key, []):
                swapped.append((key, block))
                job.setdefault("file_sd_configs", []).append(
                    {"files": [str(tmp / "sd" / "*.json")]}
                )
    return swapped


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus.kubernetes.yml"])
def test_config_passes_promtool(name: str, tmp_path: Path) -> None:
    config = yaml.safe_load((PROM / name).read_text())
    # rule files are named by their in-container path: point them at the shipped ones
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    config["rule_files"] = [str(PROM / "rules" / "*.yml")]
    # the shipped file_sd targets (GPU hosts outside compose) are checked too
    for job in config["scrape_configs"]:
        for block in job.get("file_sd_configs", []):
            assert block["files"] == ["/etc/prometheus/targets/*.yml"]
            block["files"] = [str(PROM / "targets" / "*.yml")]
    swapped = swap_unsupported_sd(config, tmp_path)
    assert swapped, "each config discovers its services through Consul or Kubernetes"
    for key, block in swapped:
        assert set(block) <= SD_FIELDS[key], f"{key}: unknown fields {set(block) - SD_FIELDS[key]}"
        if key == "consul_sd_configs":
            assert block["server"] == "consul:8500" and set(block["services"]) == SERVICES
        else:
            assert block["role"] in ROLES
    out = tmp_path / name
    out.write_text(yaml.safe_dump(config))
    proc = check("config", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_every_job_labels_its_targets_with_a_service() -> None:
    """Dashboards and alerts select on `service`: each Dante job must set it."""
    for name in ("prometheus.yml", "prometheus.kubernetes.yml"):
        config = yaml.safe_load((PROM / name).read_text())
        for job in config["scrape_configs"]:
            if job["job_name"] == "prometheus":
                continue
            targets = [r.get("target_label") for r in job.get("relabel_configs", [])]
            static = [c.get("labels", {}) for c in job.get("static_configs", [])]
            assert "service" in targets or all("service" in s for s in static), job["job_name"]


def test_rules_pass_promtool() -> None:
    assert RULES
    proc = check("rules", *map(str, RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_alerts_the_operator_needs_are_there() -> None:
    alerts = {
        rule["alert"]: rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    }
    needed = {
        "DanteProviderLost",  # provider lost
        "DanteJobWaitingTooLong",  # job waiting > N min
        "DanteJobFailureRatio",  # failure ratio
        "DanteConsumerLagGrowing",  # consumer lag growing
        "DanteGpuXidErrors",  # GPU XID
        "DanteGpuUnhealthy",  # GPU unhealthy
        "DanteNatsUnreachable",
        "DanteDatabaseUnreachable",
        "DanteObjectStoreUnreachable",
        "DanteHigh5xxRatio",
    }
    assert needed <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name


def test_a_broken_rule_is_refused(tmp_path: Path) -> None:
    """promtool really parses the expressions (so the passing check above means something)."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"alert": "X", "expr": "sum(("}]}]})
    )
    assert check("rules", str(bad)).returncode != 0
