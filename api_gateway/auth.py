"""Authenticate once, at the edge, before anything else looks at the caller.

The bearer token of every request (except health and metrics) is verified here, once; the
rate limiter keys on the result and the routes read it through ``current_principal``. Nothing
is refused here: a route that needs a caller answers 401 itself, so an unknown path is still a
404 and a public one (login, JWKS, presigned URLs) never needs a token.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from api_gateway.ratelimit import EXEMPT
from shared.app import service_state
from shared.auth import authenticate_scope

# Reachable without a token: how one gets a token, the public keys, presigned object URLs.
PUBLIC_PREFIXES = (
    "/api/v1/auth/register",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/auth/token",
    "/.well-known/jwks.json",
    "/api/v1/storage/presigned/",
    "/api/v1/billing/stripe/webhook",  # Stripe signs it; billing verifies the signature
)


def is_public(path: str) -> bool:
    return path.startswith(PUBLIC_PREFIXES)


class Authenticate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in EXEMPT:
            verifier = service_state(scope["app"]).verifier
            if verifier is not None:
                await authenticate_scope(scope, verifier)
        await self.app(scope, receive, send)
