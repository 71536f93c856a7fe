"""A real Prometheus (Debian's package) scraping a running local cluster after a GPU job ran.

The daemon is the real one with its NVML handle replaced by the ``create_autospec(pynvml)``
double (tests/support/gpu_daemon.py): this machine has no NVIDIA GPU. Everything else is real:
nats-server, the five services, Prometheus, the PromQL.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml

from tests.support.operate import Monitored

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
RULES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
METRIC = re.compile(r"\b(dante_[a-z0-9_]+)")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")
GIB = 1 << 30


def value(series: list[dict]) -> float:
    return float(series[0]["value"][1])


def test_every_service_target_is_up(monitored: Monitored) -> None:
    for service in monitored.targets:
        got = monitored.wait_series(f'up{{service="{service}"}} == 1')
        assert len(got) == 1, service
    answer = monitored.query("count(up == 0)")
    assert answer["data"]["result"] == []


def test_job_and_placement_series_after_a_job_ran(monitored: Monitored) -> None:
    assert monitored.job["status"] == "completed", monitored.job
    assert monitored.job["provider_id"] == monitored.provider_id
    m = monitored
    assert value(m.wait_series('dante_scheduler_jobs{state="completed"} >= 1')) >= 1
    assert value(m.wait_series("dante_scheduler_placements_total >= 1")) >= 1
    assert value(m.wait_series("dante_scheduler_job_queued_seconds_count >= 1")) >= 1
    assert value(m.wait_series("dante_scheduler_job_time_to_running_seconds_count >= 1")) >= 1
    assert value(m.wait_series("dante_scheduler_placement_round_duration_seconds_count > 0")) > 0
    done = m.wait_series('dante_scheduler_job_transitions_total{state="completed"} >= 1')
    assert value(done) >= 1
    # the job ran on one (double) GPU: GPU-seconds were metered
    assert m.wait_series("dante_scheduler_metered_gpu_seconds_total")
    # every requeue cause exists at zero before any requeue (alerts see a series)
    causes = m.wait_series("dante_scheduler_requeues_total")
    assert {s["metric"]["cause"] for s in causes} >= {"deadline", "provider_lost"}
    # consumer lag for the scheduler's durables and the daemon's
    lag = m.wait_series('dante_nats_consumer_pending_messages{stream="JOBS"}')
    assert {s["metric"]["consumer"] for s in lag} == {"scheduler-intake"}
    daemon = m.wait_series(
        f'dante_nats_consumer_ack_pending_messages{{consumer="daemon-{m.provider_id}"}}'
    )
    assert daemon[0]["metric"]["stream"] == "TASKS"
    assert m.wait_series('dante_dependency_up{service="scheduler",dependency="database"} == 1')
    assert m.wait_series('dante_dependency_up{service="scheduler",dependency="nats"} == 1')


def test_per_gpu_series_from_the_daemon(monitored: Monitored) -> None:
    m = monitored
    sel = f'provider="{m.provider_id}"'
    util = m.wait_series(f"dante_gpu_utilization_percent{{{sel}}}")
    assert sorted(s["metric"]["gpu"] for s in util) == ["0", "1"]
    assert {float(s["value"][1]) for s in util} == {87.0}
    assert value(m.wait_series(f'dante_gpu_memory_total_bytes{{{sel},gpu="1"}}')) == 80 * GIB
    assert value(m.wait_series(f'dante_gpu_memory_used_bytes{{{sel},gpu="0"}}')) == 10 * GIB
    assert value(m.wait_series(f'dante_gpu_temperature_celsius{{{sel},gpu="0"}}')) == 61
    assert value(m.wait_series(f'dante_gpu_power_watts{{{sel},gpu="1"}}')) == 350.5
    assert value(m.wait_series(f"sum(dante_gpu_healthy{{{sel}}})")) == 2
    assert value(m.wait_series(f"sum(dante_gpu_xid_errors_total{{{sel}}})")) == 0
    info = m.wait_series(f'dante_gpu_info{{{sel},gpu="0"}}')
    assert info[0]["metric"]["model"] == "NVIDIA H100"
    # the registry's view of the same fleet
    assert value(m.wait_series('dante_registry_providers{status="online"} >= 1')) >= 1
    assert value(m.wait_series('dante_registry_gpus{status="online",healthy="true"} >= 2')) >= 2
    age = m.wait_series(
        f'dante_registry_provider_heartbeat_age_seconds{{provider="{m.provider_id}"}}'
    )
    assert 0 <= value(age) < 60


def test_http_red_per_route_template(monitored: Monitored) -> None:
    got = monitored.wait_series('dante_http_requests_total{service="gateway",method="POST"}')
    routes = {s["metric"]["route"] for s in got}
    assert "/api/v1/jobs" in routes
    # templates, never raw ids: no label value carries the job id
    every = monitored.query("dante_http_requests_total")["data"]["result"]
    assert all(s["metric"].get("route") for s in every), [
        json.dumps(s["metric"]) for s in every if not s["metric"].get("route")
    ]
    assert not any(monitored.job["job_id"] in s["metric"]["route"] for s in every)
    assert monitored.wait_series('dante_http_request_duration_seconds_count{service="scheduler"}')


def exported_names(monitored: Monitored) -> set[str]:
    """Every metric family a process serves on /metrics (HELP/TYPE lines and samples)."""
    names: set[str] = {"up"}
    for addr in monitored.targets.values():
        text = httpx.get(f"http://{addr}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith("# TYPE ") or line.startswith("# HELP "):
                names.add(line.split()[2])
            elif line and not line.startswith("#"):
                names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def family(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            out += [(f"{path.name}: {panel['title']}", t["expr"]) for t in panel["targets"]]
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                out.append((f"{path.name}: ${var['name']}", var["definition"]))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    return [
        (f"{path.name}: {rule['alert']}", rule["expr"])
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def test_every_dashboard_and_alert_metric_is_exported(monitored: Monitored) -> None:
    exported = exported_names(monitored)
    families = {family(n) for n in exported} | exported
    missing = []
    for where, expr in dashboard_exprs() + rule_exprs():
        for name in METRIC.findall(expr):
            if name not in exported and family(name) not in families:
                missing.append((where, name))
    assert not missing, missing


def test_every_dashboard_query_runs_in_prometheus(monitored: Monitored) -> None:
    """The real PromQL parser and evaluator accept each query (template variables filled in)."""
    for where, expr in dashboard_exprs():
        if expr.startswith("label_values("):
            metric = expr[len("label_values(") :].split(",")[0]
            expr = metric
        q = (
            expr.replace("$__rate_interval", "1m")
            .replace('"$provider"', '".*"')
            .replace('"$service"', '".*"')
        )
        assert "$" not in q, (where, q)
        answer = monitored.query(q)
        assert answer["status"] == "success", (where, q, answer)


def test_the_alert_rules_load_and_evaluate_in_prometheus(monitored: Monitored) -> None:
    r = httpx.get(f"{monitored.prometheus_url}/api/v1/rules", timeout=10).json()
    rules = [rule for g in r["data"]["groups"] for rule in g["rules"]]
    assert len(rules) == len(rule_exprs())
    assert all(rule["health"] in ("ok", "unknown") for rule in rules), rules
    # a healthy cluster that just ran a job fires none of the critical ones
    monitored.wait_series("ALERTS or vector(1)")
    firing = monitored.query('ALERTS{alertstate="firing",severity="critical"}')
    assert firing["data"]["result"] == [], firing
