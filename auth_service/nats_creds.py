"""NATS user JWTs for provider daemons: the daemon sends the public half of an nkey it made
(its seed never leaves the host) and gets a JWT that lets that key consume only its own tasks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from shared.errors import BadRequest, DanteError
from shared.nats_auth import KeyPair, daemon_inbox, daemon_permissions, decode_jwt, user_jwt


class NatsAuthDisabled(DanteError):
    status_code = 404
    code = "nats_auth_disabled"


class NatsCredentialsIn(BaseModel):
    public_key: str = Field(min_length=56, max_length=56, pattern=r"^U[A-Z2-7]{55}$")


class NatsCredentialsOut(BaseModel):
    jwt: str
    expires_at: datetime
    inbox_prefix: str


class NatsIssuer:
    """Holds the account signing key written by ``shared.nats_auth.bootstrap``."""

    def __init__(self, directory: Path, ttl_seconds: int) -> None:
        self.signer = KeyPair.from_seed((directory / "account-signing.seed").read_text())
        self.account = (directory / "account.pub").read_text().strip()
        self.ttl = ttl_seconds

    def issue(self, provider_id: str, public_key: str) -> NatsCredentialsOut:
        try:
            token = user_jwt(
                self.signer,
                self.account,
                public_key,
                f"daemon-{provider_id}",
                daemon_permissions(provider_id),
                self.ttl,
            )
        except ValueError as exc:
            raise BadRequest("public_key is not a user nkey") from exc
        expires = datetime.fromtimestamp(decode_jwt(token)["exp"], UTC)
        return NatsCredentialsOut(
            jwt=token, expires_at=expires, inbox_prefix=daemon_inbox(provider_id)
        )


def issuer_or_refuse(issuer: NatsIssuer | None) -> NatsIssuer:
    if issuer is None:
        raise NatsAuthDisabled("this deployment runs NATS without per-provider users")
    return issuer
