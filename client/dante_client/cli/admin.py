"""keys (providers) and admin (admins)."""

from __future__ import annotations

from typing import Annotated

import typer

from dante_client.cli.common import JsonOpt, client, err, out, print_json, table, when

keys_app = typer.Typer(
    help="Provider API keys for your daemons (provider accounts).", no_args_is_help=True
)
admin_app = typer.Typer(help="Manage accounts (admin accounts).", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="A label for the host.")] = "default",
    expires_in_days: Annotated[
        int | None, typer.Option("--expires-in-days", help="Default: never.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key for a GPU host's daemon. It is shown once.

    Example:

        dante keys create --name gpu-host-1
    """
    with client() as api:
        key = api.create_api_key(name, expires_in_days)
    if as_json:
        print_json(key)
        return
    out.print(key.api_key)
    err.print(
        f"[dim]key {key.key_id} for provider {key.provider_id}; shown once: put it in "
        "/etc/dante/provider.env as DANTE_DAEMON_API_KEY[/dim]"
    )


@keys_app.command("list")
def keys_list(as_json: JsonOpt = False) -> None:
    """Your keys (never the secrets).

    Example:

        dante keys list
    """
    with client() as api:
        keys = api.api_keys()
    if as_json:
        print_json(keys)
        return
    table(
        ("KEY", "NAME", "PREFIX", "PROVIDER", "CREATED", "LAST USED", "REVOKED"),
        [
            (
                k.key_id,
                k.name,
                k.prefix,
                k.provider_id,
                when(k.created_at),
                when(k.last_used_at),
                when(k.revoked_at),
            )
            for k in keys
        ],
    )


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key: its daemon can no longer get tokens.

    Example:

        dante keys revoke 5b7e…
    """
    with client() as api:
        api.revoke_api_key(key_id)
    out.print(f"revoked {key_id}")


@admin_app.command("users")
def admin_users(
    role: Annotated[str | None, typer.Option("--role", help="Only this role.")] = None,
    query: Annotated[
        str | None, typer.Option("--query", "-q", help="Name or e-mail contains.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List accounts.

    Example:

        dante admin users --role provider
    """
    with client() as api:
        users = api.users(role=role, query=query)
    if as_json:
        print_json(users)
        return
    table(
        ("USER", "NAME", "ROLE", "ACTIVE", "EMAIL", "CREATED"),
        [
            (
                u.user_id,
                u.username,
                u.role,
                "yes" if u.active else "no",
                u.email,
                when(u.created_at),
            )
            for u in users
        ],
    )


def _user_id(api: object, who: str) -> str:
    """A user id, or a username looked up."""
    from dante_client.client import Client

    assert isinstance(api, Client)
    for u in api.users(query=who, limit=500):
        if u.username == who or u.user_id == who:
            return u.user_id
    return who


@admin_app.command("role")
def admin_role(
    user: Annotated[str, typer.Argument(help="User id or username.")],
    role: Annotated[str, typer.Argument(help="requester, provider or admin.")],
    as_json: JsonOpt = False,
) -> None:
    """Give an account a role.

    Example:

        dante admin role alice provider
    """
    with client() as api:
        changed = api.set_role(_user_id(api, user), role)
    if as_json:
        print_json(changed)
        return
    out.print(f"{changed.username} is now {changed.role}")


def _set_active(user: str, active: bool, as_json: bool) -> None:
    with client() as api:
        changed = api.set_active(_user_id(api, user), active)
    if as_json:
        print_json(changed)
        return
    out.print(f"{changed.username} {'enabled' if active else 'disabled'}")


@admin_app.command("disable")
def admin_disable(
    user: Annotated[str, typer.Argument(help="User id or username.")],
    as_json: JsonOpt = False,
) -> None:
    """Disable an account: refused everywhere within seconds.

    Example:

        dante admin disable mallory
    """
    _set_active(user, False, as_json)


@admin_app.command("enable")
def admin_enable(
    user: Annotated[str, typer.Argument(help="User id or username.")],
    as_json: JsonOpt = False,
) -> None:
    """Enable a disabled account again.

    Example:

        dante admin enable mallory
    """
    _set_active(user, True, as_json)
