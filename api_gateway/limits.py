"""Request body limit as pure ASGI, so streamed uploads to storage are not buffered."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import error_response


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, by header or while streaming.

    Paths under ``exempt`` (object uploads) are capped by the service that owns them.
    """

    def __init__(self, app: ASGIApp, limit: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        detail = f"request body exceeds {self.limit} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await error_response(413, "payload_too_large", detail)(scope, receive, send)
                return
        seen = 0
        exceeded = False
        replaced = False

        async def _receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def _send(message: Message) -> None:
            # Whatever the app made of the aborted body (FastAPI calls it a 400), say 413.
            nonlocal replaced
            if not exceeded:
                await send(message)
            elif message["type"] == "http.response.start" and not replaced:
                replaced = True
                await error_response(413, "payload_too_large", detail)(scope, receive, send)

        try:
            await self.app(scope, _receive, _send)
        except _TooLarge:
            if not replaced:
                await error_response(413, "payload_too_large", detail)(scope, receive, send)
