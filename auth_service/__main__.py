"""``python -m auth_service [serve|rotate-key]``."""

from __future__ import annotations

import typer

from auth_service.settings import AuthSettings

cli = typer.Typer(add_completion=False, no_args_is_help=False)


@cli.command()
def serve() -> None:
    """Run the auth service."""
    from auth_service.main import create_app
    from shared.app import serve as run
    from shared.app import setup_logging

    settings = AuthSettings()
    setup_logging(settings)
    run(create_app(settings), settings)


@cli.command("rotate-key")
def rotate_key() -> None:
    """Write a new signing key; instances sign with it after a restart, old tokens still verify."""
    from auth_service.keys import generate_key

    path = generate_key(AuthSettings().key_dir)
    typer.echo(f"new signing key: {path.stem}")


if __name__ == "__main__":
    cli()
