"""The gateway serves one OpenAPI document of the whole public API, and a /docs page that
works offline (in-process gateway; the document is built from the services' own apps)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api_gateway.auth import is_public
from api_gateway.main import create_app
from api_gateway.routes import ROUTES
from api_gateway.settings import GatewaySettings
from auth_service.main import create_app as auth
from billing_service.main import create_app as billing
from provider_registry.main import create_app as registry
from scheduler.main import create_app as scheduler
from storage_service.main import create_app as storage

SERVICES: dict[str, Callable[[], FastAPI]] = {
    "auth": auth,
    "registry": registry,
    "scheduler": scheduler,
    "storage": storage,
    "billing": billing,
}


@pytest.fixture(scope="module")
def served() -> tuple[dict[str, Any], str]:
    """The document and the page, as the gateway app answers them (built once per module)."""

    async def fetch() -> tuple[dict[str, Any], str]:
        app = create_app(GatewaySettings(port=1))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            document = await client.get("/openapi.json")
            assert document.status_code == 200
            page = await client.get("/docs")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            return document.json(), page.text

    return asyncio.run(fetch())


def _proxied_operations() -> set[tuple[str, str]]:
    """Every operation a service documents on a path the gateway routes to that service."""
    out = set()
    for service, create in SERVICES.items():
        for path, operations in create().openapi()["paths"].items():
            owner = next(
                (s for prefix, s in ROUTES if path == prefix or path.startswith(prefix + "/")),
                None,
            )
            if owner == service:
                out.update((method, path) for method in operations)
    return out


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m, p) for p, ops in document["paths"].items() for m in ops}


def test_every_proxied_and_own_operation_is_in_the_one_document(
    served: tuple[dict[str, Any], str],
) -> None:
    document, _ = served
    proxied = _proxied_operations()
    assert len(proxied) > 40  # the services' public operations, not a handful
    ops = _operations(document)
    assert proxied <= ops, sorted(proxied - ops)
    assert {("post", "/api/v1/jobs"), ("get", "/api/v1/jobs/{job_id}/logs")} <= ops
    assert not any(p.startswith("/internal") for _, p in ops)  # not reachable from outside
    ids = [op["operationId"] for ops_ in document["paths"].values() for op in ops_.values()]
    assert len(ids) == len(set(ids))


def test_the_document_declares_the_bearer_scheme_and_the_error_schema(
    served: tuple[dict[str, Any], str],
) -> None:
    document, _ = served
    components = document["components"]
    assert components["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": components["securitySchemes"]["bearerAuth"]["description"],
    }
    error = components["schemas"]["Error"]
    assert error["required"] == ["error", "detail"]
    assert "HTTPValidationError" not in components["schemas"]
    error_ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            needs_token = path.startswith("/api/") and not is_public(path)
            assert bool(op.get("security")) == needs_token, where
            codes = set(op["responses"])
            assert {"422", "503"} <= codes, where
            if needs_token:
                assert {"401", "403", "429"} <= codes, where
            for code, response in op["responses"].items():
                if code[0] in "45":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == error_ref, (where, code)
    # every reference resolves inside the document (schemas renamed on a clash included)
    text = str(document)
    for name in set(re.findall(r"#/components/schemas/([\w.-]+)", text)):
        assert name in components["schemas"], name


def test_docs_is_a_page_that_needs_nothing_from_elsewhere(
    served: tuple[dict[str, Any], str],
) -> None:
    document, page = served
    assert "<script" not in page and "<link" not in page and "style=" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    for path in document["paths"]:
        assert f"<code>{path}</code>" in page
