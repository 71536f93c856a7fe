"""``python -m scheduler serve``."""

from __future__ import annotations

import typer

cli = typer.Typer(add_completion=False)


@cli.command()
def serve() -> None:
    """Run the scheduler."""
    from scheduler.main import create_app
    from scheduler.settings import SchedulerSettings
    from shared.app import serve as run
    from shared.app import setup_logging

    settings = SchedulerSettings()
    setup_logging(settings)
    run(create_app(settings), settings)


@cli.command()
def version() -> None:
    typer.echo("dante scheduler 0.1.0")


if __name__ == "__main__":
    cli()
