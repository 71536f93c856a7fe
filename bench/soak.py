"""The fault soak: N short jobs from 4 users through the gateway of a real local cluster while
a daemon, a scheduler, nats-server, the gateway (and PostgreSQL) are SIGKILLed and restarted at
random; then what happened to every submission and every execution.

    .venv/bin/python bench/soak.py                       # 1,000 jobs on SQLite, one run
    .venv/bin/python bench/soak.py --dialect postgres --runs 3 --seed 7

Per run it prints a table and, at the end, one JSON line with every run's report. Exit status 1
when any run lost a job, made a phantom or a duplicate, or answered 500/502.

Counted (``tests/support/soak.py``): *lost*: answered 202 but never stored, or stored and not
terminal after the bounded wait; *phantom*: no 202 (503, timeout, refused, gave up) yet a job
exists; *duplicate submission*: a retry with the same ``Idempotency-Key`` made a second job;
*attempt executed twice*: the job's code started twice with the same attempt number (explained
when an event of that attempt says it was delivered again); 5xx while a component was down
(kill → ready + 5 s), and whether each 503 carried ``Retry-After``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.soak import SoakConfig, run_soak, table  # noqa: E402

cli = typer.Typer(add_completion=False)


@cli.command()
def main(
    jobs: int = typer.Option(1000, min=1, help="jobs submitted per run"),
    dialect: str = typer.Option("sqlite", help="sqlite | postgres (own server, two schedulers)"),
    runs: int = typer.Option(1, min=1, help="independent runs, each on a fresh cluster"),
    seed: int = typer.Option(0, help="seed of the first run (run i uses seed + i)"),
    rate: float = typer.Option(10.0, help="submissions per second, all users together"),
    rounds: int = typer.Option(
        2, min=1, help="kill rounds: each kind killed once per round, in random order"
    ),
    users: int = typer.Option(4, min=1),
    settle: float = typer.Option(
        60.0, help="stop waiting for accepted jobs to end after this long without progress"
    ),
    heartbeat_ttl: float = typer.Option(5.0, help="registry TTL (daemon beats every 1 s)"),
    data_dir: Path | None = typer.Option(None, help="keep data and logs here (default: temp)"),
) -> None:
    if dialect not in ("sqlite", "postgres"):
        raise typer.BadParameter("--dialect is sqlite or postgres")
    reports = []
    for i in range(runs):
        root = data_dir / f"run-{i}" if data_dir else Path(tempfile.mkdtemp(prefix="dante-soak-"))
        cfg = SoakConfig(
            data_dir=root,
            jobs=jobs,
            users=users,
            dialect=dialect,
            seed=seed + i,
            rate=rate,
            rounds=rounds,
            settle_limit=settle,
            heartbeat_ttl=heartbeat_ttl,
        )
        report = run_soak(cfg)
        report["run"] = i
        reports.append(report)
        typer.echo(f"\n== run {i + 1}/{runs} ==", err=True)
        typer.echo(table(report), err=True)
        if data_dir is None:
            shutil.rmtree(root, ignore_errors=True)
        else:
            typer.echo(f"data and logs: {root}", err=True)
    totals = {
        k: sum(r[k] for r in reports)
        for k in (
            "accepted",
            "lost",
            "phantom",
            "duplicate_submissions",
            "attempt_executed_twice",
            "5xx",
            "5xx_while_down",
            "500",
            "502",
            "503",
            "503_with_retry_after",
        )
    }
    print(json.dumps({"bench": "soak", "dialect": dialect, "totals": totals, "runs": reports}))
    bad = totals["lost"] + totals["phantom"] + totals["duplicate_submissions"]
    raise typer.Exit(1 if bad + totals["500"] + totals["502"] else 0)


if __name__ == "__main__":
    cli()
