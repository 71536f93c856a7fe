"""Write the Grafana dashboards (dashboards/*.json) from the panel lists below.

Run ``python deploy/grafana/generate.py`` after changing a panel; a test fails while the
committed JSON differs from what this writes, and checks every query against a live scrape.
Series polled by every replica (jobs, consumer lag, fleet) are taken with ``max``; counters are
summed over replicas.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "dante-prometheus"}
OUT = Path(__file__).parent / "dashboards"
R = "$__rate_interval"


def panel(
    title: str,
    exprs: list[tuple[str, str]],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    w: int = 12,
    h: int = 8,
) -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(65 + i), "datasource": DATASOURCE, "expr": e, "legendFormat": legend}
            for i, (e, legend) in enumerate(exprs)
        ],
        "_size": (w, h),
    }


def stat(title: str, expr: str, legend: str, *, w: int = 4) -> dict[str, Any]:
    """A single-number panel of the overview's top row."""
    return panel(title, [(expr, legend)], kind="stat", w=w, h=5)


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Left to right, wrapping at Grafana's 24-column grid."""
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        w, h = p.pop("_size")
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["id"] = i
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        x, row_h = x + w, max(row_h, h)
    return panels


def dashboard(uid: str, title: str, panels: list[dict[str, Any]], variables: list[str]) -> dict:
    templating = [
        {
            "name": "datasource",
            "type": "datasource",
            "query": "prometheus",
            "current": {"text": "Prometheus", "value": "dante-prometheus"},
            "hide": 2,
        }
    ]
    for label, metric in (v.split(":", 1) for v in variables):
        templating.append(
            {
                "name": label,
                "type": "query",
                "datasource": DATASOURCE,
                "query": {"query": f"label_values({metric}, {label})", "refId": "vars"},
                "definition": f"label_values({metric}, {label})",
                "includeAll": True,
                "multi": True,
                "allValue": ".*",
                "current": {"text": "All", "value": "$__all"},
                "refresh": 2,
            }
        )
    return {
        "uid": uid,
        "title": title,
        "tags": ["dante"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": templating},
        "annotations": {"list": []},
        "panels": layout(panels),
    }


def overview() -> dict:
    return dashboard(
        "dante-overview",
        "Dante / Platform overview",
        [
            stat("Services up", 'sum by (service) (up{service!=""})', "{{service}}", w=8),
            stat("Jobs queued", 'max(dante_scheduler_jobs{state="queued"})', "queued"),
            stat("Jobs running", 'max(dante_scheduler_jobs{state="running"})', "running"),
            stat("Providers online", 'max(dante_registry_providers{status="online"})', "online"),
            stat(
                "GPUs healthy",
                'max(dante_registry_gpus{status="online",healthy="true"})',
                "healthy",
            ),
            panel("Jobs by state", [("max by (state) (dante_scheduler_jobs)", "{{state}}")]),
            panel(
                "Jobs finished per minute",
                [
                    (
                        "sum by (state) (rate(dante_scheduler_job_transitions_total"
                        f'{{state=~"completed|failed|cancelled|timed_out"}}[{R}])) * 60',
                        "{{state}}",
                    )
                ],
            ),
            panel(
                "5xx ratio by service",
                [
                    (
                        f"sum by (service) (rate(dante_http_requests_total"
                        f'{{status=~"5.."}}[{R}])) / '
                        f"sum by (service) (rate(dante_http_requests_total[{R}]))",
                        "{{service}}",
                    )
                ],
                unit="percentunit",
            ),
            panel(
                "Dependencies reachable",
                [("min by (dependency) (dante_dependency_up)", "{{dependency}}")],
            ),
            panel(
                "GPU-hours metered per hour",
                [(f"sum(rate(dante_scheduler_metered_gpu_seconds_total[{R}]))", "GPU-h/h")],
            ),
            panel(
                "Money metered per hour (price currency)",
                [
                    (
                        f"sum(rate(dante_scheduler_metered_cost_micros_total[{R}])) * 3600 / 1e6",
                        "per hour",
                    )
                ],
            ),
        ],
        [],
    )


def pipeline() -> dict:
    q = "histogram_quantile"
    return dashboard(
        "dante-job-pipeline",
        "Dante / Job pipeline",
        [
            panel(
                "Time queued (p50, p95, p99)",
                [
                    (
                        f"{q}({p}, sum by (le) "
                        f"(rate(dante_scheduler_job_queued_seconds_bucket[{R}])))",
                        f"p{int(p * 100)}",
                    )
                    for p in (0.5, 0.95, 0.99)
                ],
                unit="s",
            ),
            panel(
                "Submission to running (p50, p95)",
                [
                    (
                        f"{q}({p}, sum by (le) (rate("
                        f"dante_scheduler_job_time_to_running_seconds_bucket[{R}])))",
                        f"p{int(p * 100)}",
                    )
                    for p in (0.5, 0.95)
                ],
                unit="s",
            ),
            panel(
                "Oldest queued job",
                [("max(dante_scheduler_queued_oldest_age_seconds)", "age")],
                unit="s",
            ),
            panel(
                "Placements per second",
                [(f"sum(rate(dante_scheduler_placements_total[{R}]))", "placed")],
            ),
            panel(
                "Placement round duration (p50, p99)",
                [
                    (
                        f"{q}({p}, sum by (le) (rate("
                        f"dante_scheduler_placement_round_duration_seconds_bucket[{R}])))",
                        f"p{int(p * 100)}",
                    )
                    for p in (0.5, 0.99)
                ],
                unit="s",
            ),
            panel(
                "Requeues by cause",
                [(f"sum by (cause) (increase(dante_scheduler_requeues_total[{R}]))", "{{cause}}")],
            ),
            panel(
                "Retries exhausted and deadline expiries",
                [
                    (
                        f"sum by (cause) (increase(dante_scheduler_retries_exhausted_total[{R}]))",
                        "exhausted: {{cause}}",
                    ),
                    (
                        f"sum(increase(dante_scheduler_dispatch_deadline_expired_total[{R}]))",
                        "deadline expired",
                    ),
                ],
            ),
            panel(
                "Status reports refused",
                [
                    (
                        f"sum by (reason) (increase(dante_scheduler_status_rejected_total[{R}]))",
                        "{{reason}}",
                    )
                ],
            ),
            panel(
                "JetStream consumer lag (pending)",
                [
                    (
                        "max by (stream, consumer) (dante_nats_consumer_pending_messages)",
                        "{{stream}}/{{consumer}}",
                    )
                ],
            ),
            panel(
                "JetStream ack pending",
                [
                    (
                        "max by (stream, consumer) (dante_nats_consumer_ack_pending_messages)",
                        "{{stream}}/{{consumer}}",
                    )
                ],
            ),
            panel(
                "Messages handled by outcome",
                [
                    (
                        f"sum by (consumer, outcome) (rate(dante_nats_messages_total[{R}]))",
                        "{{consumer}} {{outcome}}",
                    )
                ],
            ),
            panel(
                "Stream size",
                [("max by (stream) (dante_nats_stream_bytes)", "{{stream}}")],
                unit="bytes",
            ),
        ],
        [],
    )


def gpu_fleet() -> dict:
    sel = '{provider=~"$provider"}'
    return dashboard(
        "dante-gpu-fleet",
        "Dante / GPU fleet",
        [
            panel(
                "Providers by status",
                [("max by (status) (dante_registry_providers)", "{{status}}")],
            ),
            panel(
                "Heartbeat age",
                [
                    (
                        f"max by (provider) (dante_registry_provider_heartbeat_age_seconds{sel})",
                        "{{provider}}",
                    )
                ],
                unit="s",
            ),
            panel(
                "GPU utilisation",
                [(f"dante_gpu_utilization_percent{sel}", "{{provider}} #{{gpu}}")],
                unit="percent",
            ),
            panel(
                "GPU memory used / total",
                [
                    (
                        f"dante_gpu_memory_used_bytes{sel} / dante_gpu_memory_total_bytes{sel}",
                        "{{provider}} #{{gpu}}",
                    )
                ],
                unit="percentunit",
            ),
            panel(
                "GPU temperature",
                [(f"dante_gpu_temperature_celsius{sel}", "{{provider}} #{{gpu}}")],
                unit="celsius",
            ),
            panel(
                "GPU power", [(f"dante_gpu_power_watts{sel}", "{{provider}} #{{gpu}}")], unit="watt"
            ),
            panel("Unhealthy GPUs", [(f"dante_gpu_healthy{sel} == 0", "{{provider}} #{{gpu}}")]),
            panel(
                "XID errors (10 min)",
                [(f"increase(dante_gpu_xid_errors{sel}[10m])", "{{provider}} #{{gpu}}")],
            ),
            panel(
                "Daemon tasks running",
                [("sum by (instance) (dante_daemon_tasks_running)", "{{instance}}")],
            ),
            panel(
                "Daemon tasks finished",
                [(f"sum by (state) (increase(dante_daemon_tasks_total[{R}]))", "{{state}}")],
            ),
        ],
        ["provider:dante_gpu_info"],
    )


def red() -> dict:
    sel = 'service=~"$service"'
    return dashboard(
        "dante-service-red",
        "Dante / Service RED",
        [
            panel(
                "Requests per second by route",
                [
                    (
                        f"sum by (service, route) (rate(dante_http_requests_total{{{sel}}}[{R}]))",
                        "{{service}} {{route}}",
                    )
                ],
                w=24,
            ),
            panel(
                "Errors (5xx) per second by route",
                [
                    (
                        f"sum by (service, route) (rate(dante_http_requests_total"
                        f'{{{sel},status=~"5.."}}[{R}]))',
                        "{{service}} {{route}}",
                    )
                ],
            ),
            panel(
                "Client errors (4xx) per second",
                [
                    (
                        f"sum by (service, status) (rate(dante_http_requests_total"
                        f'{{{sel},status=~"4.."}}[{R}]))',
                        "{{service}} {{status}}",
                    )
                ],
            ),
            panel(
                "Latency p95 by route",
                [
                    (
                        "histogram_quantile(0.95, sum by (service, route, le) (rate("
                        f"dante_http_request_duration_seconds_bucket{{{sel}}}[{R}])))",
                        "{{service}} {{route}}",
                    )
                ],
                unit="s",
            ),
            panel(
                "Latency p50 by service",
                [
                    (
                        "histogram_quantile(0.5, sum by (service, le) (rate("
                        f"dante_http_request_duration_seconds_bucket{{{sel}}}[{R}])))",
                        "{{service}}",
                    )
                ],
                unit="s",
            ),
            panel(
                "Rate-limited requests",
                [(f"sum by (by) (rate(dante_gateway_rate_limited_total[{R}]))", "{{by}}")],
            ),
            panel(
                "Object store latency p95",
                [
                    (
                        "histogram_quantile(0.95, sum by (op, le) (rate("
                        f"dante_storage_backend_request_duration_seconds_bucket[{R}])))",
                        "{{op}}",
                    )
                ],
                unit="s",
            ),
            panel(
                "Object bytes in/out",
                [
                    (
                        f"sum by (direction) (rate(dante_storage_object_bytes_total[{R}]))",
                        "{{direction}}",
                    )
                ],
                unit="Bps",
            ),
        ],
        ["service:dante_http_requests_total"],
    )


DASHBOARDS = {
    "overview": overview,
    "job-pipeline": pipeline,
    "gpu-fleet": gpu_fleet,
    "service-red": red,
}


def render() -> dict[str, str]:
    return {f"{name}.json": json.dumps(fn(), indent=2) + "\n" for name, fn in DASHBOARDS.items()}


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}", file=sys.stderr)
