"""Every service's OpenAPI declares what each operation answers, not only what it takes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

from api_gateway.main import create_app as gateway
from auth_service.main import create_app as auth
from billing_service.main import create_app as billing
from provider_registry.main import create_app as registry
from scheduler.main import create_app as scheduler
from storage_service.main import create_app as storage

NO_BODY = {"204", "205", "304"}


def _typed(schema: dict[str, Any]) -> bool:
    """A schema that says something: a model, a list of models, a union of models, or an
    object whose members are typed (``dict[str, Any]`` and ``{}`` say nothing)."""
    if "$ref" in schema:
        return True
    if "anyOf" in schema or "oneOf" in schema:
        return all(_typed(s) for s in schema.get("anyOf", schema.get("oneOf", [])))
    if schema.get("type") == "array":
        return _typed(schema.get("items", {}))
    if schema.get("type") == "object":
        extra = schema.get("additionalProperties")
        return bool(schema.get("properties")) or (isinstance(extra, dict) and _typed(extra))
    return schema.get("type") in ("string", "integer", "number", "boolean")


def _problems(app: FastAPI) -> list[str]:
    problems = []
    for path, operations in app.openapi()["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            ok = {code: r for code, r in op["responses"].items() if code.startswith("2")}
            if not ok:
                problems.append(f"{where}: no 2xx response")
            for code, response in ok.items():
                if code in NO_BODY or method == "head":
                    continue
                content = response.get("content", {})
                if not content:
                    problems.append(f"{where} {code}: no media type declared")
                for media, body in content.items():
                    if not _typed(body.get("schema", {})):
                        problems.append(f"{where} {code} {media}: no response schema")
    return problems


@pytest.mark.parametrize(
    "create_app",
    [gateway, auth, registry, scheduler, storage, billing],
    ids=["gateway", "auth", "registry", "scheduler", "storage", "billing"],
)
def test_every_operation_declares_its_response_schema(create_app: Callable[[], FastAPI]) -> None:
    assert _problems(create_app()) == []


def test_the_check_catches_an_undeclared_response() -> None:
    app = FastAPI()

    @app.get("/loose")
    async def loose() -> dict[str, Any]:
        return {}

    assert _problems(app) == ["GET /loose 200 application/json: no response schema"]
