"""ps, status, events, logs, cancel, rerun."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.live import Live

from dante_client import models
from dante_client.cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    JsonOpt,
    client,
    err,
    out,
    print_json,
    styled_state,
    table,
    when,
)
from dante_client.errors import DanteError

if TYPE_CHECKING:
    from rich.table import Table

STATES = ("queued", "dispatched", "running", "completed", "failed", "cancelled", "timed_out")


def _jobs_table(jobs: list[models.Job]) -> Table:
    from rich.table import Table
    from rich.text import Text

    t = Table(show_edge=False, header_style="bold", pad_edge=False)
    for col in ("JOB", "NAME", "STATE", "EXIT", "ATTEMPT", "GPU", "CREATED"):
        t.add_column(col, no_wrap=col == "JOB")
    for j in jobs:
        count = j.resources.get("gpu_count") or 0
        gpu = f"{count}x {j.gpu_model or j.resources.get('gpu_model') or 'GPU'}" if count else "cpu"
        if (j.resources.get("nodes") or 1) > 1:  # a gang: that on each of its hosts
            gpu += f" on {j.resources['nodes']} nodes"
        t.add_row(
            Text(j.job_id),
            Text(j.name or ""),
            styled_state(j.status),
            Text("" if j.exit_code is None else str(j.exit_code)),
            Text(str(j.attempt)),
            Text(str(gpu or "")),
            Text(when(j.created_at)),
        )
    return t


def ps(
    state: Annotated[
        str | None,
        typer.Option("--state", "-s", help=f"Only jobs in this state ({', '.join(STATES)})."),
    ] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Only jobs with this tag.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many.")] = 20,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Redraw every 2 s until Ctrl-C.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List your jobs, newest first (admins: everyone's).

    Examples:

        dante ps

        dante ps --state running --watch

        dante ps --json | jq -r '.[].job_id'
    """
    if state and state not in STATES:
        raise typer.BadParameter(f"unknown state {state!r}; one of {', '.join(STATES)}")
    with client() as api:
        if as_json:
            print_json(api.jobs(state, tag, limit).jobs)
            return
        if not watch:
            out.print(_jobs_table(api.jobs(state, tag, limit).jobs))
            return
        try:
            with Live(_jobs_table(api.jobs(state, tag, limit).jobs), console=out) as live:
                while True:
                    time.sleep(2)
                    live.update(_jobs_table(api.jobs(state, tag, limit).jobs))
        except KeyboardInterrupt:
            raise typer.Exit(0) from None


def status(job_id: str, as_json: JsonOpt = False) -> None:
    """Everything about one job.

    Examples:

        dante status 3f0c…

        dante status 3f0c… --json | jq .exit_code
    """
    with client() as api:
        job = api.job(job_id)
    if as_json:
        print_json(job)
        return
    table(("FIELD", "VALUE"), _status_rows(job))


def _status_rows(job: models.Job) -> list[tuple[str, object]]:
    """``dante status``'s rows, the empty ones left out; a gang has one row per rank."""
    rows = [
        ("job", job.job_id),
        ("name", job.name),
        ("state", styled_state(job.status)),
        ("exit code", job.exit_code),
        ("error", job.error),
        ("waiting", job.waiting_reason),
        ("attempt", f"{job.attempt} of {1 + (job.max_retries or 0)}"),
        ("nodes", job.resources.get("nodes")),  # a gang; provider: rank 0's host
        *((f"rank {r.rank}", f"{r.provider_id} GPUs {r.gpu_indices} {r.state}") for r in job.ranks),
        ("provider", job.provider_id),
        ("gpus", f"{job.gpu_model or ''} {job.gpu_indices}" if job.gpu_indices else ""),
        ("price/h", job.price_per_hour),
        ("created", job.created_at),
        ("started", job.started_at),
        ("finished", job.finished_at),
        ("inputs", ", ".join(job.inputs)),
        ("outputs", ", ".join(job.outputs)),
        ("tags", ", ".join(job.tags)),
    ]
    return [r for r in rows if r[1] not in (None, "")]


def events(job_id: str, as_json: JsonOpt = False) -> None:
    """Every state transition of a job, with its cause.

    Example:

        dante events 3f0c…
    """
    with client() as api:
        evs = api.events(job_id)
    if as_json:
        print_json(evs)
        return
    table(
        ("AT", "FROM", "TO", "ATTEMPT", "CAUSE"),
        [
            (
                e.at.strftime("%Y-%m-%d %H:%M:%S"),
                e.from_state,
                styled_state(e.to_state),
                e.attempt,
                e.cause,
            )
            for e in evs
        ],
    )


def logs(
    job_id: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream new lines until the job ends.")
    ] = False,
) -> None:
    """A job's output. With -f it streams live and survives a dropped connection (it resumes
    after the last line it printed: none lost, none repeated).

    Examples:

        dante logs 3f0c…

        dante logs -f 3f0c…
    """
    with client() as api:
        if not follow:
            sys.stdout.write(api.logs(job_id))
            sys.stdout.flush()
            return
        api.job(job_id)  # an unknown id fails now, not after the just-submitted grace
        try:
            for line in api.follow_logs(job_id):
                sys.stdout.write(line.line + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        job = api.job(job_id)
    err.print(f"[dim]job {job.job_id} {job.status}[/dim]")


def cancel(
    job_ids: Annotated[list[str], typer.Argument(help="One or more job ids.")],
    as_json: JsonOpt = False,
) -> None:
    """Cancel jobs; a running one gets SIGTERM, its grace_seconds, then SIGKILL.

    Example:

        dante cancel 3f0c… 9a1d…
    """
    results, failed = [], False
    with client() as api:
        for job_id in job_ids:
            try:
                results.append(api.cancel(job_id))
            except DanteError as exc:
                failed = True
                results.append({"job_id": job_id, "error": exc.code, "detail": exc.message})
    if as_json:
        print_json(results)
    else:
        for r in results:
            if "error" in r:
                err.print(f"[red]{r['job_id']}: {r['detail']}[/red]")
            else:
                out.print(f"{r['job_id']}: cancellation requested")
    if failed:
        raise typer.Exit(EXIT_ERROR)


def rerun(job_id: str, as_json: JsonOpt = False) -> None:
    """Submit a job again, exactly as it was (a new job id).

    Example:

        dante rerun 3f0c…   # then: dante logs -f <new id>
    """
    with client() as api:
        sub = api.rerun(job_id)
    if as_json:
        print_json(sub)
        return
    out.print(sub.job_id)
    err.print(f"[dim]follow it: dante logs -f {sub.job_id}[/dim]")
