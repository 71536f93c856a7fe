"""The session's tokens: the access token in use and the refresh token that rotates it."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dante_client.models import Tokens

# Refresh this long before the access token expires, so a call never starts with a token
# that dies on the way (the platform's access tokens live 15 minutes by default).
EARLY = timedelta(seconds=20)

TokenListener = Callable[[Tokens], None]


class TokenStore:
    """Where tokens persist between processes (the CLI's credentials file). Two processes of
    one user that both refresh the same refresh token would look like token theft to the auth
    service (reuse of a spent token revokes the whole session), so a refresh runs under the
    store's lock and first adopts a pair that another process already rotated."""

    def lock(self) -> AbstractContextManager[object]:
        raise NotImplementedError

    def load(self) -> Tokens | None:
        raise NotImplementedError

    def save(self, tokens: Tokens) -> None:
        raise NotImplementedError


@dataclass
class TokenState:
    access_token: str | None = None
    refresh_token: str | None = None
    expires_at: datetime | None = None
    on_tokens: TokenListener | None = None
    lifetime: timedelta | None = None  # measured at the last refresh

    def can_refresh(self) -> bool:
        return bool(self.refresh_token)

    def stale(self) -> bool:
        """True if a refresh should happen before the next call."""
        if not self.refresh_token:
            return False
        if not self.access_token:
            return True
        if self.expires_at is None:
            return False
        at = _aware(self.expires_at)
        early = min(EARLY, self.lifetime / 4) if self.lifetime else EARLY
        return datetime.now(UTC) + early >= at

    def __post_init__(self) -> None:
        self._learn(self.access_token)

    def _learn(self, token: str | None) -> None:
        """Expiry and lifetime from the token itself (``iat``/``exp``; not verified: the
        client only uses them to refresh on time, the server verifies)."""
        claims = _claims(token)
        if "exp" in claims:
            self.expires_at = datetime.fromtimestamp(claims["exp"], UTC)
            if "iat" in claims:
                self.lifetime = timedelta(seconds=claims["exp"] - claims["iat"])

    def update(self, tokens: Tokens, *, notify: bool = True) -> None:
        self.access_token = tokens.access_token
        self.refresh_token = tokens.refresh_token
        self.expires_at = tokens.expires_at
        if tokens.expires_at is not None:
            self.lifetime = _aware(tokens.expires_at) - datetime.now(UTC)
        self._learn(tokens.access_token)
        if notify and self.on_tokens is not None:
            self.on_tokens(tokens)

    def header(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.access_token}"} if self.access_token else {}


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _claims(token: str | None) -> dict[str, Any]:
    if not token or token.count(".") != 2:
        return {}
    payload = token.split(".")[1]
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
