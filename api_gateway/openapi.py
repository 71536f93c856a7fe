"""The public API in one document: the gateway's own operations and every one it proxies.

Merged in-process from the services' own FastAPI apps (their ``create_app().openapi()``, which
``shared/openapi.py`` has already given security and error responses), once per process and
then cached, rather than fetched from the running services:

* one image carries every service's code (Dockerfile), so the document describes exactly the
  code deployed with this gateway, and no network call or running service is needed to serve
  it (``/docs`` works while a service is down, and never returns half a document);
* fetching would need a cache, a refresh policy and an answer for "that service is down";
  in-process there is nothing to go stale within one release. The one case it misses, a
  rolling upgrade with services on another release than the gateway, is short-lived.

Only the paths the gateway routes to a service (``api_gateway.routes.ROUTES``) are taken: the
services' ``/internal/*``, ``/health`` and ``/ready`` are not reachable through the gateway.
Every proxied operation also gets the gateway's own answers: 429 (rate limit), 413 (body
limit) where it takes a body, 503/504 when the service is down or slow.

``/docs`` is a plain HTML page rendered here from the document: no script, no stylesheet, no
CDN (the console's CSP allows none inline, and nothing may be fetched at run time).
"""

from __future__ import annotations

import asyncio
import copy
import html
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from api_gateway.auth import is_public
from shared.openapi import declare_errors

# Which package serves each upstream (api_gateway.routes.ROUTES names them).
SERVICE_APPS = {
    "auth": "auth_service.main",
    "registry": "provider_registry.main",
    "scheduler": "scheduler.main",
    "storage": "storage_service.main",
    "billing": "billing_service.main",
}
GATEWAY_ERRORS = (429, 503, 504)
GATEWAY_BODY_ERRORS = (413,)
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _service_document(service: str) -> dict[str, Any]:
    import importlib

    module = importlib.import_module(SERVICE_APPS[service])
    create: Callable[[], FastAPI] = module.create_app
    return copy.deepcopy(create().openapi())


def _rewrite_refs(node: Any, renamed: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                name = value.rsplit("/", 1)[-1]
                out[key] = f"#/components/schemas/{renamed.get(name, name)}"
            else:
                out[key] = _rewrite_refs(value, renamed)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, renamed) for v in node]
    return node


def _merge_schemas(
    merged: dict[str, Any], service: str, document: dict[str, Any]
) -> dict[str, Any]:
    """Add ``document``'s component schemas to ``merged``; a name already taken by a
    different schema is prefixed with the service's name. Returns the document with its
    references rewritten accordingly."""
    schemas = document.get("components", {}).get("schemas", {})
    renamed = {
        name: f"{service}_{name}"
        for name, schema in schemas.items()
        if name in merged and merged[name] != schema
    }
    document = _rewrite_refs(document, renamed)
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        merged[renamed.get(name, name)] = schema
    return document


def _routed_to(path: str, service: str, routes: tuple[tuple[str, str], ...]) -> bool:
    owner = next(
        (svc for prefix, svc in routes if path == prefix or path.startswith(prefix + "/")), None
    )
    return owner == service


def merged_document(gateway: FastAPI, routes: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    own = copy.deepcopy(gateway.openapi())
    schemas: dict[str, Any] = {}
    own = _merge_schemas(schemas, "gateway", own)
    paths: dict[str, dict[str, Any]] = {p: dict(ops) for p, ops in own["paths"].items()}
    operation_ids = {
        op.get("operationId")
        for ops in paths.values()
        for op in ops.values()
        if "operationId" in op
    }
    for service in dict.fromkeys(svc for _, svc in routes):
        document = _merge_schemas(schemas, service, _service_document(service))
        for path, operations in document.get("paths", {}).items():
            if not _routed_to(path, service, routes):
                continue
            for method, op in operations.items():
                if method not in METHODS or method in paths.get(path, {}):
                    continue  # the gateway answers it itself (POST /api/v1/jobs)
                if op.get("operationId") in operation_ids:
                    op["operationId"] = f"{service}_{op['operationId']}"
                operation_ids.add(op.get("operationId"))
                op.setdefault("tags", [service])
                paths.setdefault(path, {})[method] = op
    document = {
        "openapi": own["openapi"],
        "info": {
            "title": "Dante GPU platform API",
            "version": own["info"]["version"],
            "description": "Every public operation, served by the API gateway. Authenticate "
            "with `Authorization: Bearer <access token>` (POST /api/v1/auth/login). Every "
            'error is JSON: `{"error": code, "detail": ...}` (schema Error).',
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.items()))},
    }
    # The gateway itself refuses a proxied call without a token unless the path is public
    # (api_gateway/routes.py ``proxy``), whatever the service would do.
    secured = {
        (method, path)
        for path, ops in paths.items()
        for method, op in ops.items()
        if op.get("security") or (path.startswith("/api/") and not is_public(path))
    }
    declare_errors(
        document,
        lambda method, path: (method, path) in secured,
        extra=GATEWAY_ERRORS,
        body_extra=GATEWAY_BODY_ERRORS,
    )
    return document


def _docs_page(document: dict[str, Any]) -> str:
    e = html.escape
    rows: list[str] = []
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            codes = ", ".join(sorted(op.get("responses", {})))
            token = "bearer" if op.get("security") else "none"
            body = ""
            content = op.get("requestBody", {}).get("content", {})
            for media, described in content.items():
                ref = described.get("schema", {}).get("$ref", "")
                body = f"{media} {ref.rsplit('/', 1)[-1]}".strip()
            rows.append(
                "<tr>"
                f"<td>{e(method.upper())}</td><td><code>{e(path)}</code></td>"
                f"<td>{e(op.get('summary', ''))}</td><td>{e(token)}</td>"
                f"<td>{e(body)}</td><td>{e(codes)}</td>"
                "</tr>"
            )
    schemas = "".join(
        f'<h3 id="schema-{e(name)}">{e(name)}</h3><pre>{e(json.dumps(schema, indent=2))}</pre>'
        for name, schema in document["components"]["schemas"].items()
    )
    info = document["info"]
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{e(info['title'])}</title></head><body>"
        f"<h1>{e(info['title'])} {e(info['version'])}</h1><p>{e(info['description'])}</p>"
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI '
        f"{e(document['openapi'])}; load it into any OpenAPI client or viewer).</p>"
        "<h2>Operations</h2><table><thead><tr><th>Method</th><th>Path</th><th>Summary</th>"
        "<th>Token</th><th>Body</th><th>Answers</th></tr></thead><tbody>"
        + "".join(rows)
        + f"</tbody></table><h2>Schemas</h2>{schemas}</body></html>"
    )


def docs_router(routes: tuple[tuple[str, str], ...]) -> APIRouter:
    """``/openapi.json`` and ``/docs``, built on first request (about a CPU-second: every
    service's app is imported and built) in a thread, then kept for the process's life."""
    router = APIRouter(include_in_schema=False)
    built: dict[str, tuple[dict[str, Any], str]] = {}
    lock = asyncio.Lock()

    def build(app: FastAPI) -> tuple[dict[str, Any], str]:
        document = merged_document(app, routes)
        return document, _docs_page(document)

    async def get(app: FastAPI) -> tuple[dict[str, Any], str]:
        async with lock:
            if "doc" not in built:
                built["doc"] = await asyncio.to_thread(build, app)
        return built["doc"]

    @router.get("/openapi.json")
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse((await get(request.app))[0])

    @router.get("/docs")
    async def docs(request: Request) -> HTMLResponse:
        page = (await get(request.app))[1]
        return HTMLResponse(page, headers={"cache-control": "no-cache"})

    return router
