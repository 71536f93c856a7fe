"""The console's file serving in process (no cluster): another directory, a missing one, the
image's copy of the files, and every referenced module present."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api_gateway import console
from api_gateway.settings import GatewaySettings
from shared.app import create_service_app

ROOT = Path(__file__).resolve().parents[2]


def _app(directory: Path) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield

    app = create_service_app(GatewaySettings(), title="console", lifespan=lifespan)
    app.add_middleware(console.SecurityHeaders)
    app.include_router(console.console_router(directory))
    return app


def _client(directory: Path) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_app(directory)), base_url="http://t"
    )


async def test_serves_the_directory_it_is_given(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>other</title>")
    (tmp_path / "assets" / "x.js").write_text("export const x = 1;")
    async with _client(tmp_path) as client:
        page = await client.get("/")
        assert page.status_code == 200 and "other" in page.text
        assert page.headers["x-frame-options"] == "DENY"
        js = await client.get("/assets/x.js")
        assert js.headers["content-type"].startswith("text/javascript")
        assert (await client.get("/assets/../index.html")).status_code == 404


async def test_a_missing_console_is_a_clear_404(tmp_path: Path) -> None:
    async with _client(tmp_path / "absent") as client:
        r = await client.get("/")
        assert r.status_code == 404
        assert r.json()["error"] == "not_found" and "CONSOLE_DIR" in r.json()["detail"]


def test_the_setting_names_the_console_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DANTE_GATEWAY_CONSOLE_DIR", "/opt/dante/share/console")
    assert GatewaySettings().console_dir == Path("/opt/dante/share/console")


def test_the_image_ships_the_console_where_the_setting_points() -> None:
    text = (ROOT / "Dockerfile").read_text()
    copied = re.search(r"^COPY console/ (\S+)$", text, re.M)
    assert copied, "the Dockerfile does not copy console/"
    env = re.search(r"DANTE_GATEWAY_CONSOLE_DIR=(\S+)", text)
    assert env and env.group(1).rstrip("/") == copied.group(1).rstrip("/")
    assert "console" not in (ROOT / ".dockerignore").read_text().split()


def test_every_module_the_console_imports_exists() -> None:
    """A typo in an import path would only show in a browser; catch it here too."""
    js = ROOT / "console" / "assets" / "js"
    files = [*js.glob("*.js"), *js.glob("pages/*.js")]
    assert len(files) >= 10
    for f in files:
        for target in re.findall(r"""^import .* from "(\.[^"]+)";$""", f.read_text(), re.M):
            assert (f.parent / target).resolve().is_file(), (f, target)
    html = (ROOT / "console" / "index.html").read_text()
    for ref in re.findall(r'(?:src|href)="(/assets/[^"]+)"', html):
        assert (ROOT / "console" / ref.lstrip("/")).is_file(), ref
