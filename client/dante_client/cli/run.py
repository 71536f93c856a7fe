"""run and submit: a YAML job file in, live logs out, the job's exit code back."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, TextIO

import typer

from dante_client import jobfile, models
from dante_client.cli.common import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TIMED_OUT,
    JsonOpt,
    client,
    err,
    fail,
    out,
    print_json,
    styled_state,
)
from dante_client.cli.progress import transfer
from dante_client.client import Client
from dante_client.errors import DanteError, JobFileError, NotFound

JobFileArg = Annotated[Path, typer.Argument(help="The YAML job file (schema: docs/client.md).")]


def exit_code(job: models.Job) -> int:
    """The job's own exit code; 124 timed out, 125 cancelled, 1 failed without one."""
    if job.status == "completed":
        return 0
    if job.status == "timed_out":
        return EXIT_TIMED_OUT
    if job.status == "cancelled":
        return EXIT_CANCELLED
    return job.exit_code if job.exit_code not in (None, 0) else EXIT_FAILED


def _load(path: Path) -> jobfile.JobFile:
    try:
        return jobfile.load(path)
    except JobFileError as exc:
        fail(exc.message)


def _upload_inputs(api: Client, job: jobfile.JobFile) -> None:
    for local, key in job.uploads:
        with transfer(f"↑ {local.name} → {key}", local.stat().st_size) as progress:
            api.upload(local, key, progress=progress)


def _submit(api: Client, job: jobfile.JobFile) -> models.Submitted:
    _upload_inputs(api, job)
    return api.submit(job.spec)


def submit(file: JobFileArg, as_json: JsonOpt = False) -> None:
    """Submit a job file and return at once (= dante run --detach).

    Example:

        JOB=$(dante submit examples/hello.yaml) && dante logs -f $JOB
    """
    job = _load(file)
    with client() as api:
        sub = _submit(api, job)
    if as_json:
        print_json(sub)
    else:
        out.print(sub.job_id)


def _wait_stored(api: Client, job_id: str) -> models.Job:
    """A just-published job may 404 for a moment until the scheduler has stored it."""
    while True:
        try:
            return api.job(job_id)
        except NotFound:
            time.sleep(0.2)


def run(
    file: JobFileArg,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Submit and return; don't follow.")
    ] = False,
    outputs_dir: Annotated[
        Path, typer.Option("--outputs-dir", "-o", help="Where declared outputs are saved.")
    ] = Path("."),
    no_download: Annotated[
        bool, typer.Option("--no-download", help="Leave the outputs in storage.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a job file: upload its local inputs, submit, stream state and logs live, download
    its outputs, and exit with the job's exit code (124: timed out, 125: cancelled).
    Ctrl-C detaches; the job keeps running.

    Examples:

        dante run examples/hello.yaml

        dante run train.yaml --outputs-dir results/

        dante run job.yaml --detach --json
    """
    job = _load(file)
    with client() as api:
        sub = _submit(api, job)
        if detach:
            print_json(sub) if as_json else out.print(sub.job_id)
            return
        err.print(f"[bold]job {sub.job_id}[/bold] submitted ({job.spec['name']})")
        try:
            # with --json, stdout carries only the final JSON; the log goes to stderr
            final = _follow(api, sub.job_id, sys.stderr if as_json else sys.stdout)
        except KeyboardInterrupt:
            err.print(
                f"\nDetached from job {sub.job_id}; it keeps running.\n"
                f"  reattach: dante logs -f {sub.job_id}\n"
                f"  status:   dante status {sub.job_id}\n"
                f"  cancel:   dante cancel {sub.job_id}"
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
        if final.status in ("completed", "failed") and not no_download:
            _download_outputs(api, job, final, outputs_dir)
    code = exit_code(final)
    if as_json:
        print_json(final)
    summary = f"job {final.job_id} [bold]{final.status}[/bold]"
    if final.exit_code is not None:
        summary += f" (exit {final.exit_code})"
    if final.error and final.status != "completed":
        summary += f": {final.error}"
    err.print(summary)
    raise typer.Exit(code)


def _follow(api: Client, job_id: str, lines_to: TextIO) -> models.Job:
    """Print state changes (stderr) and log lines (stdout) until the job has ended."""
    seen = {"state": ""}

    def show_state() -> None:
        job = _wait_stored(api, job_id)
        if job.status != seen["state"]:
            seen["state"] = job.status
            extra = f" ({job.waiting_reason})" if job.waiting_reason else ""
            err.print("● ", styled_state(job.status), extra, sep="")

    show_state()
    for line in api.follow_logs(job_id, on_idle=show_state):
        if seen["state"] in ("queued", "dispatched"):
            seen["state"] = "running"
            err.print("● ", styled_state("running"), sep="")
        lines_to.write(line.line + "\n")
        lines_to.flush()
    final = api.job(job_id)
    while not final.terminal:  # the log ended a moment before the state did
        time.sleep(0.3)
        final = api.job(job_id)
    return final


def _download_outputs(
    api: Client, job: jobfile.JobFile, final: models.Job, outputs_dir: Path
) -> None:
    for key, dest in job.downloads:
        target = dest if dest.is_absolute() else outputs_dir / dest
        try:
            info = api.stat(key)
        except NotFound:
            if final.status == "completed":
                err.print(f"[yellow]output {key} was not written by the job[/yellow]")
            continue
        except DanteError as exc:
            err.print(f"[yellow]output {key}: {exc.message}[/yellow]")
            continue
        with transfer(f"↓ {key} → {target}", info.size) as progress:
            api.download(key, target, progress=progress)
