"""login, logout, whoami, register."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from dante_client import config
from dante_client.cli.common import JsonOpt, client, err, out, print_json, report, state
from dante_client.client import Client
from dante_client.errors import DanteError


def login(
    url: Annotated[
        str | None, typer.Option("--url", help="Gateway URL (default: the last one, or DANTE_URL).")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="Username.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Log in and keep the session (a refresh token, file mode 0600) in the config dir.

    Examples:

        dante login --url http://127.0.0.1:8080 --user alice

        echo "$PASS" | dante login -u ci-bot --password-stdin
    """
    profile = config.load()
    base = url or state.url or os.environ.get("DANTE_URL") or profile.url
    username = user or typer.prompt("Username", default=profile.username or None)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif env := os.environ.get("DANTE_PASSWORD"):
        password = env
    else:
        password = typer.prompt("Password", hide_input=True)
    with Client(base) as api:
        try:
            tokens = api.login(username, password)
        except DanteError as exc:
            report(exc)
    profile = config.Profile(url=base.rstrip("/")).with_tokens(tokens)
    path = config.save(profile)
    err.print(f"Logged in to {profile.url} as {tokens.username} ({tokens.role}).")
    err.print(f"[dim]Session kept in {path}[/dim]")


def logout() -> None:
    """End the session on the server and forget it here.

    Example:

        dante logout
    """
    profile = config.load()
    if profile.refresh_token:
        try:
            with client() as api:
                api.logout()
        except DanteError as exc:  # expired already: forgetting it locally is what matters
            err.print(f"[dim]server logout skipped: {exc.message}[/dim]")
    config.forget()
    err.print("Logged out.")


def whoami(as_json: JsonOpt = False) -> None:
    """Who the current session is.

    Examples:

        dante whoami

        dante whoami --json | jq -r .role
    """
    with client() as api:
        me = api.whoami()
    if as_json:
        print_json(me)
        return
    out.print(f"{me.username} ({me.role}) at {api.url}")


def register(
    user: Annotated[str, typer.Option("--user", "-u", prompt=True, help="Username.")],
    email: Annotated[str, typer.Option("--email", prompt=True, help="E-mail address.")],
    role: Annotated[
        str, typer.Option("--role", help="requester (default) or provider.")
    ] = "requester",
    url: Annotated[str | None, typer.Option("--url", help="Gateway URL.")] = None,
) -> None:
    """Create an account (then `dante login`).

    Example:

        dante register --url http://127.0.0.1:8080 -u alice --email alice@example.com
    """
    base = url or state.url or os.environ.get("DANTE_URL") or config.load().url
    password = os.environ.get("DANTE_PASSWORD") or typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )
    with Client(base) as api:
        created = api.register(user, email, password, role)
    err.print(f"Created {created.username} ({created.role}). Next: dante login -u {user}")
