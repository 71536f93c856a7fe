"""The console's session: the refresh token in an httpOnly cookie, the access token in memory.

The browser never holds a credential that script can read. At sign-in the gateway logs in at
the auth service on the browser's behalf, keeps the refresh token in an httpOnly, SameSite=Strict
cookie scoped to ``/console/session`` (Secure over TLS) and hands the short-lived access token
to the page, which keeps it in a JavaScript variable and sends it as a bearer header like every
other client. A reload or an expired access token is answered by ``POST /console/session/
refresh``, which rotates the refresh token (the auth service detects reuse).

The API itself takes no cookie, so it has nothing for a forged cross-site request to ride on.
The three cookie-authenticated calls here are state-changing, so each is guarded twice:
an ``Origin`` that is not our own is refused, and refresh/logout need the double-submit CSRF
token (a second, script-readable cookie echoed in ``X-CSRF-Token``; another site can neither
read it nor set the header without a CORS preflight we never grant).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

import httpx
import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api_gateway.state import State
from shared.app import correlation_id, own_state
from shared.errors import DanteError, Forbidden, ServiceUnavailable, Unauthorized

log = structlog.get_logger(__name__)

PREFIX = "/console/session"
REFRESH_COOKIE = "dante_refresh"
CSRF_COOKIE = "dante_csrf"
CSRF_HEADER = "x-csrf-token"
# The auth service's refresh tokens live 30 days; the cookie never outlives them.
COOKIE_MAX_AGE = 30 * 24 * 3600


class SignIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


def _same_origin(request: Request) -> None:
    """Browsers send ``Origin`` on every POST; one from another site is refused outright."""
    origin = request.headers.get("origin")
    if origin is None:
        return  # not a browser (curl, tests): CSRF needs a browser carrying our cookie
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin != own:
        raise Forbidden("cross-site request refused", code="cross_site_refused")


def _check_csrf(request: Request) -> None:
    _same_origin(request)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    header = request.headers.get(CSRF_HEADER, "")
    if not cookie or not hmac.compare_digest(cookie, header):
        raise Forbidden("missing or wrong CSRF token", code="csrf_failed")


async def _auth(request: Request, path: str, **kwargs: Any) -> httpx.Response:
    state = own_state(request.app, State)
    bases = await state.upstreams.candidates("auth")
    client = request.client.host if request.client else ""
    headers = {"x-request-id": correlation_id(request), "x-forwarded-for": client}
    headers.update(kwargs.pop("headers", {}))
    try:
        return await state.http.post(f"{bases[0]}/api/v1/auth{path}", headers=headers, **kwargs)
    except httpx.HTTPError as exc:
        log.warning("console.auth_unreachable", error=type(exc).__name__)
        raise ServiceUnavailable("the auth service is unreachable") from exc


def _relay_error(resp: httpx.Response) -> DanteError:
    try:
        body = resp.json()
        code, detail = body.get("error", "upstream_error"), body.get("detail", "")
    except ValueError:
        code, detail = "upstream_error", resp.text[:200]
    return DanteError(str(detail), status_code=resp.status_code, code=code)


def _session(request: Request, tokens: dict[str, Any]) -> JSONResponse:
    """The page gets the access token and who it is; the refresh token only as a cookie."""
    csrf = secrets.token_urlsafe(32)
    body = {
        "access_token": tokens["access_token"],
        "expires_at": tokens["expires_at"],
        "user_id": tokens["user_id"],
        "username": tokens["username"],
        "role": tokens["role"],
        "csrf_token": csrf,
    }
    resp = JSONResponse(body, headers={"cache-control": "no-store"})
    secure = request.url.scheme == "https"
    resp.set_cookie(
        REFRESH_COOKIE,
        tokens["refresh_token"],
        max_age=COOKIE_MAX_AGE,
        path=PREFIX,
        secure=secure,
        httponly=True,
        samesite="strict",
    )
    resp.set_cookie(
        CSRF_COOKIE, csrf, max_age=COOKIE_MAX_AGE, path="/", secure=secure, samesite="strict"
    )
    return resp


def _clear(resp: Response) -> None:
    resp.delete_cookie(REFRESH_COOKIE, path=PREFIX, httponly=True, samesite="strict")
    resp.delete_cookie(CSRF_COOKIE, path="/", samesite="strict")


router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.post("")
async def sign_in(body: SignIn, request: Request) -> Response:
    _same_origin(request)  # login CSRF: another site must not sign a victim into its account
    resp = await _auth(request, "/login", json=body.model_dump())
    if resp.status_code != 200:
        raise _relay_error(resp)
    return _session(request, resp.json())


@router.post("/refresh")
async def refresh(request: Request) -> Response:
    _check_csrf(request)
    token = request.cookies.get(REFRESH_COOKIE)
    if not token:
        raise Unauthorized("no console session", code="no_session")
    resp = await _auth(request, "/refresh", json={"refresh_token": token})
    if resp.status_code != 200:
        error = _relay_error(resp)
        out = JSONResponse({"error": error.code, "detail": error.message}, error.status_code)
        _clear(out)  # spent, revoked or disabled: the cookie is worthless now
        return out
    return _session(request, resp.json())


@router.post("/logout")
async def sign_out(request: Request) -> Response:
    """Revokes the access token and the refresh-token family, then drops the cookies."""
    _check_csrf(request)
    token = request.cookies.get(REFRESH_COOKIE)
    bearer = request.headers.get("authorization")
    done = False
    if bearer:
        resp = await _auth(
            request,
            "/logout",
            json={"refresh_token": token} if token else None,
            headers={"authorization": bearer},
        )
        if resp.status_code not in (204, 401):
            raise _relay_error(resp)
        done = resp.status_code == 204
    if not done and token:
        # No usable access token (an idle tab's expired): spend the refresh token for a fresh
        # one, then log that out, so the refresh-token family ends here all the same.
        refreshed = await _auth(request, "/refresh", json={"refresh_token": token})
        if refreshed.status_code == 200:
            tokens = refreshed.json()
            await _auth(
                request,
                "/logout",
                json={"refresh_token": tokens["refresh_token"]},
                headers={"authorization": f"Bearer {tokens['access_token']}"},
            )
    out = Response(status_code=204)
    _clear(out)
    return out
