"""Refuse, before any route sees them, inputs no field of ours can hold (issue 11).

Every service and the gateway run this (``shared.app.create_service_app``). It answers 422
``validation_error`` (the same shape as a model's) for:

* a path or query string that is not UTF-8 once percent-decoded, or holds a control character
  (U+0000-U+001F, U+007F), a surrogate or a non-character (U+FDD0-U+FDEF, U+xFFFE/U+xFFFF);
* a JSON body (``application/json`` or ``+json``) that is not UTF-8, holds in any key or string
  a NUL or other control character except tab, newline and carriage return, a lone surrogate
  (``"\\ud800"``) or a non-character, an integer beyond 64 bits, or a number that is not
  finite (``1e400``, ``NaN``). Narrower bounds (a column's 32 bits) are the models' business
  (``shared.contracts`` has the constants).

Such inputs used to reach SQLite (``OverflowError``), PostgreSQL (NUL in text), NATS headers
and httpx URLs, and came back as 500s, 503s, or a 202 for a job that was never stored.
A JSON body is read whole to be checked (up to ``max_json_bytes``: larger is 413); other bodies,
and object uploads whatever their type (``RAW_BODY_PREFIXES``), stream past untouched.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import error_response

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_NONCHARACTERS = "\ufdd0-\ufdef\ufffe\uffff" + "".join(
    f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(1, 17)
)
# in a path or query: no control character at all
BAD_IN_URL = re.compile(f"[\x00-\x1f\x7f\ud800-\udfff{_NONCHARACTERS}]")
# in JSON text: tab, newline and carriage return are ordinary (scripts, descriptions)
BAD_IN_TEXT = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff{_NONCHARACTERS}]")
DEFAULT_MAX_JSON_BYTES = 16 << 20
# Object bytes are the user's content, whatever their Content-Type: never read or judged here
# (a 1 GiB ``application/json`` upload streams through like any other).
RAW_BODY_PREFIXES = ("/api/v1/storage/objects/", "/api/v1/storage/presigned/")


class Invalid(Exception):
    def __init__(self, loc: list[str | int], msg: str) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


def _character_problem(text: str) -> str | None:
    match = BAD_IN_TEXT.search(text)
    if match is None:
        return None
    return f"character U+{ord(match.group()):04X} is not accepted"


def check_url(raw_path: bytes, query: bytes) -> None:
    """Raise :class:`Invalid` for a path or query no route may receive."""
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(["path"], "the path is not UTF-8 once percent-decoded") from exc
    if match := BAD_IN_URL.search(path):
        raise Invalid(["path"], f"character U+{ord(match.group()):04X} is not accepted in a path")
    if not query:
        return
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise Invalid(["query"], "the query string is not UTF-8 once percent-decoded") from exc
    for name, value in pairs:
        for text in (name, value):
            if match := BAD_IN_URL.search(text):
                raise Invalid(
                    ["query", name[:64]],
                    f"character U+{ord(match.group()):04X} is not accepted in a query",
                )


def check_json(node: Any, loc: list[str | int]) -> None:
    """Raise :class:`Invalid` for the first value in ``node`` no field can hold."""
    if isinstance(node, str):
        if problem := _character_problem(node):
            raise Invalid(loc, problem)
    elif isinstance(node, bool):
        return
    elif isinstance(node, int):
        if not INT64_MIN <= node <= INT64_MAX:
            raise Invalid(loc, "integer out of range (beyond 64 bits)")
    elif isinstance(node, float):
        if not math.isfinite(node):
            raise Invalid(loc, "number is not finite")
    elif isinstance(node, dict):
        for key, value in node.items():
            if problem := _character_problem(key):
                raise Invalid([*loc, key.encode("utf-8", "replace").decode()[:64]], problem)
            check_json(value, [*loc, key])
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_json(value, [*loc, i])


def _reject(loc: list[str | int], msg: str) -> Any:
    safe = [
        p.encode("utf-8", "backslashreplace").decode() if isinstance(p, str) else p for p in loc
    ]
    return error_response(
        422, "validation_error", [{"loc": safe, "msg": msg, "type": "value_error"}]
    )


def is_json(scope: Scope) -> bool:
    """The media types FastAPI parses a body as JSON for (and this guard checks)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


class InputGuard:
    """Pure ASGI: checks the URL of every request and the body of JSON ones (see module)."""

    def __init__(self, app: ASGIApp, max_json_bytes: int = DEFAULT_MAX_JSON_BYTES) -> None:
        self.app = app
        self.max_json_bytes = max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            check_url(scope.get("raw_path") or scope["path"].encode(), scope["query_string"])
        except Invalid as exc:
            await _reject(exc.loc, exc.msg)(scope, receive, send)
            return
        if not is_json(scope) or scope["path"].startswith(RAW_BODY_PREFIXES):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_json_bytes:
                await error_response(
                    413, "payload_too_large", f"a JSON body may hold {self.max_json_bytes} bytes"
                )(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body.strip():
            try:
                check_json(json.loads(body), ["body"])
            except Invalid as exc:
                await _reject(exc.loc, exc.msg)(scope, receive, send)
                return
            except json.JSONDecodeError:
                pass  # malformed JSON: the route's own validation says where
            except ValueError as exc:  # not UTF-8; an integer of more than 4300 digits
                await _reject(["body"], f"the body is not valid JSON: {exc}")(scope, receive, send)
                return
        await self.app(scope, replay_body(body, receive), send)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app a body already read whole, then the rest of the
    connection's messages (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
