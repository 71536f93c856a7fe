"""The ``dante`` command: requesters, providers and admins, over the gateway's public API."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated

import typer

from dante_client import __version__
from dante_client.cli import admin, auth, fleet, jobs, run, storage
from dante_client.cli.common import EXIT_ERROR, err, state
from dante_client.errors import DanteError

app = typer.Typer(
    name="dante",
    help="Run jobs on the Dante GPU platform: **dante login**, then "
    "**dante run job.yaml**. Every command has --help with examples; "
    "listings take --json.",
    rich_markup_mode="markdown",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"dante {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    url: Annotated[
        str | None,
        typer.Option(
            "--url", envvar="DANTE_URL", help="Gateway URL (default: from `dante login`)."
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    state.url = url


PANELS: dict[str, tuple[Callable[..., None], ...]] = {
    "Account": (auth.login, auth.logout, auth.whoami, auth.register),
    "Jobs": (
        run.run,
        run.submit,
        jobs.ps,
        jobs.status,
        jobs.events,
        jobs.logs,
        jobs.cancel,
        jobs.rerun,
    ),
    "Storage": (storage.cp, storage.ls, storage.rm),
    "Fleet": (fleet.providers, fleet.gpus, fleet.usage),
}
for panel, commands in PANELS.items():
    for command in commands:
        app.command(rich_help_panel=panel)(command)
app.add_typer(admin.keys_app, name="keys", rich_help_panel="Providers and admins")
app.add_typer(admin.admin_app, name="admin", rich_help_panel="Providers and admins")


def main() -> None:
    """Entry point: API errors become one clear line (and a hint), exit code 2."""
    try:
        app()
    except DanteError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        if hint := exc.hint():
            err.print(f"[dim]hint: {hint}[/dim]")
        sys.exit(EXIT_ERROR)
