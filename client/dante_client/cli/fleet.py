"""providers, gpus, usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.text import Text

from dante_client.cli.common import JsonOpt, client, fail, out, print_json, table, when


def providers(
    status: Annotated[
        str | None, typer.Option("--status", help="online, offline, maintenance or draining.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The provider hosts the platform knows.

    Examples:

        dante providers

        dante providers --status online --json
    """
    with client() as api:
        rows = api.providers(status=status)
    if as_json:
        print_json(rows)
        return
    table(
        ("PROVIDER", "NAME", "STATUS", "GPUS", "CPUS", "PRICE/H", "HEARTBEAT"),
        [
            (
                p.id,
                p.name,
                p.status,
                len(p.gpus),
                p.cpu_count,
                p.price_per_hour,
                when(p.last_heartbeat_at),
            )
            for p in rows
        ],
    )


def gpus(as_json: JsonOpt = False) -> None:
    """The fleet, one row per GPU: model, VRAM, health, utilisation and busy/free.

    Busy means a job you can see (all jobs, for an admin) holds that GPU index now.

    Examples:

        dante gpus

        dante gpus --json | jq '[.[] | select(.busy == false)] | length'
    """
    with client() as api:
        fleet = api.providers()
        held: dict[tuple[str, int], str] = {}
        for state in ("dispatched", "running"):
            for job in api.iter_jobs(state=state):
                for index in job.gpu_indices:
                    if job.provider_id:
                        held[(job.provider_id, index)] = job.job_id
    rows: list[dict[str, Any]] = []
    for p in fleet:
        for g in p.gpus:
            job_id = held.get((p.id, g.index))
            rows.append(
                {
                    "provider_id": p.id,
                    "provider": p.name,
                    "provider_status": p.status,
                    "index": g.index,
                    "model": g.name,
                    "vram_mb": g.memory_total_mb,
                    "healthy": g.healthy,
                    "utilization_pct": g.metrics.get("utilization_pct"),
                    "memory_used_mb": g.metrics.get("memory_used_mb"),
                    "busy": job_id is not None,
                    "job_id": job_id,
                }
            )
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("No GPUs in the fleet (providers offering CPU only: `dante providers`).")
        return
    table(
        ("PROVIDER", "GPU", "MODEL", "VRAM", "HEALTH", "UTIL", "STATE"),
        [
            (
                r["provider"],
                r["index"],
                r["model"],
                f"{r['vram_mb'] / 1024:.0f} GiB",
                Text("ok", "green") if r["healthy"] else Text("unhealthy", "red"),
                "" if r["utilization_pct"] is None else f"{r['utilization_pct']:.0f}%",
                Text(f"busy {r['job_id'][:8]}", "yellow") if r["busy"] else Text("free", "green"),
            )
            for r in rows
        ],
    )


def _since(value: str) -> datetime:
    """``7d``, ``12h``, ``30m`` ago, or an ISO date/time."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if value[:-1].isdigit() and value[-1] in units:
        return datetime.now(UTC) - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since: expected e.g. 7d, 12h, 30m or an ISO date, got {value!r}")
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def usage(
    since: Annotated[str | None, typer.Option("--since", help="e.g. 7d, 12h, 2026-01-01.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """What you used (requester), earned (provider), or everything (admin).

    Examples:

        dante usage --since 7d

        dante usage --json | jq .totals
    """
    with client() as api:
        report = api.usage(since=_since(since) if since else None)
    if as_json:
        print_json(report)
        return
    totals = report.totals
    out.print(
        f"[bold]{report.scope}[/bold]: {totals.get('jobs', 0)} job attempts, "
        f"{totals.get('gpu_seconds', 0):g} GPU-s, {totals.get('seconds', 0):g} s, "
        f"cost {totals.get('cost', 0):g}"
    )
    if report.records:
        table(
            ("JOB", "ATTEMPT", "STATE", "HOST", "GPU", "SECONDS", "COST"),
            [
                (  # a gang's attempt has a record on each rank's host
                    r.job_id,
                    r.attempt,
                    r.state,
                    r.provider_id or "",
                    f"{r.gpu_count}x {r.gpu_model or 'cpu'}",
                    f"{r.seconds:g}",
                    r.cost,
                )
                for r in report.records
            ],
        )
