"""Access tokens for tests, built by the auth service's own claim code and signed by a test
keyring (``auth_service.keys.KeyRing``), so a minted token is what the service would issue."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from auth_service.keys import KeyRing
from auth_service.service import access_claims
from shared.db import utcnow
from shared.settings import ServiceSettings

Mint = Callable[..., str]


def claims(
    role: str = "requester",
    user_id: str | None = None,
    *,
    provider_id: str | None = None,
    ttl: int = 900,
    **overrides: Any,
) -> dict[str, Any]:
    """The claims the auth service signs for ``role`` (a negative ``ttl`` has expired);
    ``overrides`` replace single claims."""
    defaults = ServiceSettings.model_fields
    out = access_claims(
        defaults["jwt_issuer"].default,
        defaults["jwt_audience"].default,
        sub=user_id or str(uuid.uuid4()),
        name="test-user",
        role=role,
        ttl=ttl,
        provider_id=provider_id,
        now=utcnow(),
    )
    out.update(overrides)
    return out


def minter(keyring: KeyRing) -> Mint:
    """``mint(role, user_id, provider_id=..., ttl=..., **claim_overrides) -> token``."""

    def mint(role: str = "requester", user_id: str | None = None, **kw: Any) -> str:
        return keyring.sign(claims(role, user_id, **kw))

    return mint
