"""``python -m auth_service [serve|rotate-key|version]``."""

from __future__ import annotations

import typer

from shared.cli import service_cli

cli = service_cli("auth_service", "AuthSettings", "auth service")


@cli.command("rotate-key")
def rotate_key() -> None:
    """Write a new signing key; instances sign with it after a restart, old tokens still verify."""
    from auth_service.keys import generate_key
    from auth_service.settings import AuthSettings

    path = generate_key(AuthSettings().key_dir)
    typer.echo(f"new signing key: {path.stem}")


if __name__ == "__main__":
    cli()
