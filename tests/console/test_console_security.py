"""Security of the console: headers, the session cookie, CSRF and cross-site refusal.

Over real sockets against a real cluster; the cross-site case also in a real browser, from a
page served by another origin.
"""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from http.cookies import SimpleCookie

import httpx
import pytest

from localdev.cluster import LocalCluster
from tests.support.accounts import PASSWORD, new_user
from tests.support.console import Console
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e


def _directives(csp: str) -> dict[str, str]:
    return {
        part.strip().split(" ", 1)[0]: part.strip().partition(" ")[2]
        for part in csp.split(";")
        if part.strip()
    }


def _sign_in(gw: str, user: dict, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gw}/console/session",
        json={"username": user["username"], "password": PASSWORD},
        headers=headers,
    )


def _cookies(resp: httpx.Response) -> dict[str, dict[str, str | bool]]:
    """Each Set-Cookie as {name: {attribute: value}} (flags as True)."""
    out: dict[str, dict[str, str | bool]] = {}
    for raw in resp.headers.get_list("set-cookie"):
        jar = SimpleCookie()
        jar.load(raw)
        for name, morsel in jar.items():
            attrs: dict[str, str | bool] = {"value": morsel.value}
            for key in ("path", "samesite", "max-age"):
                if morsel[key]:
                    attrs[key] = str(morsel[key]).lower()
            lower = raw.lower()
            attrs["httponly"] = "httponly" in lower
            attrs["secure"] = bool(re.search(r";\s*secure(;|$)", lower))
            out[name] = attrs
    return out


@pytest.mark.parametrize("path", ["/", "/assets/js/main.js", "/api/v1/jobs", "/nope"])
def test_every_response_carries_the_security_headers(cluster: LocalCluster, path: str) -> None:
    r = httpx.get(cluster.gateway_url + path)
    csp = _directives(r.headers["content-security-policy"])
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval', no CDN
    assert csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["object-src"] == "'none'" and csp["base-uri"] == "'none'"
    assert "unsafe" not in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"


def test_the_page_has_no_inline_script_or_style_and_loads_only_its_own_files(
    cluster: LocalCluster,
) -> None:
    r = httpx.get(cluster.gateway_url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts, "the console has a script"
    for attrs, body in scripts:
        assert 'src="/assets/' in attrs and not body.strip()  # external, same-origin only
    assert "<style" not in html and " style=" not in html and "javascript:" not in html
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from another host
    js = httpx.get(cluster.gateway_url + "/assets/js/main.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]


def test_asset_paths_cannot_leave_the_console_folder(cluster: LocalCluster) -> None:
    gw = cluster.gateway_url
    for path in ("/assets/../index.html", "/assets/%2e%2e/%2e%2e/pyproject.toml", "/assets/x"):
        r = httpx.get(gw + path)
        assert r.status_code == 404, (path, r.status_code)
        assert "dependencies" not in r.text


def test_session_cookie_attributes(cluster: LocalCluster) -> None:
    gw = cluster.gateway_url
    user = new_user(gw)
    r = _sign_in(gw, user)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "refresh_token" not in body and body["access_token"] and body["role"] == "requester"
    assert r.headers["cache-control"] == "no-store"
    cookies = _cookies(r)
    refresh = cookies["dante_refresh"]
    assert refresh["httponly"] is True  # script cannot read it
    assert refresh["samesite"] == "strict"
    assert refresh["path"] == "/console/session"  # sent to the session exchange only
    assert refresh["secure"] is False  # plain http in dev; see the TLS case below
    csrf = cookies["dante_csrf"]
    assert csrf["httponly"] is False and csrf["samesite"] == "strict" and csrf["path"] == "/"
    assert csrf["value"] == body["csrf_token"]

    # Behind TLS (a proxy saying so from a trusted address) both cookies are Secure.
    tls = _sign_in(gw, user, **{"x-forwarded-proto": "https"})
    assert tls.status_code == 200, tls.text
    assert all(c["secure"] is True for c in _cookies(tls).values())


def test_the_api_takes_no_cookie_so_a_cross_site_request_has_no_credential(
    cluster: LocalCluster,
) -> None:
    gw = cluster.gateway_url
    user = new_user(gw)
    session = _sign_in(gw, user)
    cookies = {"dante_refresh": session.cookies["dante_refresh"], "dante_csrf": "x"}
    job = {"type": "script", "name": "forged", "params": {"script_content": "true"}}
    forged = httpx.post(f"{gw}/api/v1/jobs", json=job, cookies=cookies)
    assert forged.status_code == 401
    assert httpx.get(f"{gw}/api/v1/jobs", cookies=cookies).status_code == 401


def test_refresh_and_logout_need_the_csrf_token_and_our_origin(cluster: LocalCluster) -> None:
    gw = cluster.gateway_url
    user = new_user(gw)
    session = _sign_in(gw, user)
    refresh_cookie = session.cookies["dante_refresh"]
    csrf = session.json()["csrf_token"]
    jar = {"dante_refresh": refresh_cookie, "dante_csrf": csrf}
    url = f"{gw}/console/session/refresh"

    missing = httpx.post(url, cookies=jar)
    assert missing.status_code == 403 and missing.json()["error"] == "csrf_failed"
    wrong = httpx.post(url, cookies=jar, headers={"x-csrf-token": "guess"})
    assert wrong.status_code == 403 and wrong.json()["error"] == "csrf_failed"
    other_site = httpx.post(
        url, cookies=jar, headers={"x-csrf-token": csrf, "origin": "http://evil.example"}
    )
    assert other_site.status_code == 403 and other_site.json()["error"] == "cross_site_refused"
    logout = httpx.post(f"{gw}/console/session/logout", cookies=jar)
    assert logout.status_code == 403
    login = _sign_in(gw, user, origin="http://evil.example")  # login CSRF
    assert login.status_code == 403

    ok = httpx.post(url, cookies=jar, headers={"x-csrf-token": csrf, "origin": gw})
    assert ok.status_code == 200, ok.text
    assert ok.cookies["dante_refresh"] != refresh_cookie  # rotated
    # The spent refresh token again: refused (and its whole family burned by the auth service).
    replay = httpx.post(url, cookies=jar, headers={"x-csrf-token": csrf})
    assert replay.status_code == 401
    assert 'dante_refresh=""' in replay.headers.get("set-cookie", "")  # and the cookie dropped


def test_logout_revokes_the_access_token_and_the_refresh_cookie(cluster: LocalCluster) -> None:
    gw = cluster.gateway_url
    user = new_user(gw)
    session = _sign_in(gw, user)
    access = session.json()["access_token"]
    bearer = {"authorization": f"Bearer {access}"}
    assert httpx.get(f"{gw}/api/v1/jobs", headers=bearer).status_code == 200
    jar = {"dante_refresh": session.cookies["dante_refresh"], "dante_csrf": "t"}
    out = httpx.post(
        f"{gw}/console/session/logout", cookies=jar, headers={**bearer, "x-csrf-token": "t"}
    )
    assert out.status_code == 204
    cleared = out.headers.get_list("set-cookie")
    assert any(c.startswith('dante_refresh=""') for c in cleared)
    refresh = httpx.post(
        f"{gw}/console/session/refresh", cookies=jar, headers={"x-csrf-token": "t"}
    )
    assert refresh.status_code == 401
    # The gateway re-reads the revocation list every few seconds: wait for the condition.
    eventually(
        lambda: httpx.get(f"{gw}/api/v1/jobs", headers=bearer).status_code == 401,
        limit=30,
        interval=0.5,
        what="the access token refused after logout",
    )


@pytest.fixture
def attacker_site() -> Iterator[str]:
    """Another origin (same host, another port) serving whatever page the test sets."""
    pages: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Handler.pages = pages  # type: ignore[attr-defined]
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pages  # type: ignore[misc]
    finally:
        server.shutdown()


def test_a_cross_site_form_post_from_a_browser_is_refused(
    cluster: LocalCluster, console, attacker_site
) -> None:
    """A signed-in browser visits another site whose form posts to the session exchange.

    Another port on the same host is the hardest case: it is the same *site*, so even the
    SameSite=Strict cookie is sent; the Origin check and the CSRF token must refuse it.
    """
    gw = cluster.gateway_url
    user = new_user(gw)
    c: Console = console()
    c.sign_in(user["username"], PASSWORD)
    origin, pages = attacker_site
    pages["/"] = (
        f'<form method="post" action="{gw}/console/session/refresh">'
        '<button id="go">win a prize</button></form>'
    )
    page = c.page
    page.goto(origin + "/")
    page.click("#go")
    page.wait_for_url(f"{gw}/console/session/refresh")
    text = page.locator("body").inner_text()
    assert "cross_site_refused" in text, text
    # And the victim's console session is untouched by the attempt.
    c.open("#/jobs")
    page.locator("#whoami").wait_for()
    assert user["username"] in page.locator("#whoami").inner_text()


def test_logout_from_an_idle_tab_still_ends_the_refresh_token(cluster: LocalCluster) -> None:
    """An expired (here: unusable) access token must not leave the cookie's session alive."""
    gw = cluster.gateway_url
    user = new_user(gw)
    session = _sign_in(gw, user)
    jar = {"dante_refresh": session.cookies["dante_refresh"], "dante_csrf": "t"}
    out = httpx.post(
        f"{gw}/console/session/logout",
        cookies=jar,
        headers={"authorization": "Bearer not-a-token", "x-csrf-token": "t"},
    )
    assert out.status_code == 204
    again = httpx.post(f"{gw}/console/session/refresh", cookies=jar, headers={"x-csrf-token": "t"})
    assert again.status_code == 401
