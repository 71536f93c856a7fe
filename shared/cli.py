"""The one command line every service has: ``python -m <service> serve`` (and ``version``).

The app and its settings are imported only when ``serve`` runs, so ``--help`` and ``version``
stay fast and work without a configured environment.
"""

from __future__ import annotations

from importlib import import_module

import typer

VERSION = "0.1.0"


def service_cli(package: str, settings_class: str, title: str) -> typer.Typer:
    """``serve`` builds ``<package>.settings.<settings_class>()`` and runs
    ``<package>.main.create_app(settings)`` under uvicorn with the service's logging."""
    cli = typer.Typer(add_completion=False, help=f"Dante {title}.")

    @cli.command()
    def serve() -> None:
        """Run the service (settings from the environment)."""
        from shared.app import serve as run
        from shared.app import setup_logging

        settings = getattr(import_module(f"{package}.settings"), settings_class)()
        setup_logging(settings)
        run(import_module(f"{package}.main").create_app(settings), settings)

    @cli.command()
    def version() -> None:
        """Print the version."""
        typer.echo(f"dante {title} {VERSION}")

    return cli
