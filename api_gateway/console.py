"""The web console: static files at ``/`` and the security headers every response carries.

The console is plain ES modules and CSS from ``console/`` at the repository root: no build step,
no CDN, nothing fetched at run time. Its pages call the same ``/api/v1/...`` routes as any
other client; see docs/console.md.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import NotFound

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"

# No inline script or style anywhere (the console sets styles through the CSSOM only), nothing
# from another origin, and no page may frame ours (clickjacking).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),  # for browsers that predate frame-ancestors
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


class SecurityHeaders:
    """Pure ASGI (streamed log and object responses pass through untouched). Every response,
    API ones included: a JSON error opened directly in a tab is then as inert as the console."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.names = {name for name, _ in SECURITY_HEADERS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k not in self.names]
                message["headers"] = [*kept, *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, _send)


def console_router(directory: Path = CONSOLE_DIR) -> APIRouter:
    """``/`` is the single page; ``/assets/...`` its files. Client-side routes live in the
    fragment (``/#/jobs/<id>``), so no other server path needs to answer with the page."""
    router = APIRouter(include_in_schema=False)
    root = directory.resolve()
    assets = (root / "assets").resolve()
    mimetypes.add_type("text/javascript", ".js")  # some distributions map .js to text/plain

    @router.get("/")
    async def index() -> FileResponse:
        page = root / "index.html"
        if not page.is_file():  # an image or install without the console's files
            raise NotFound("the web console is not installed here (DANTE_GATEWAY_CONSOLE_DIR)")
        return FileResponse(page, headers={"cache-control": "no-cache"})

    @router.get("/assets/{path:path}")
    async def asset(path: str) -> FileResponse:
        target = (assets / path).resolve()
        if not target.is_relative_to(assets) or not target.is_file():
            raise NotFound("no such console file")
        return FileResponse(target, headers={"cache-control": "no-cache"})

    return router
