"""Accounts made through the gateway, as a user with curl would: register, log in, mint keys."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

PASSWORD = "correct horse battery"


def new_user(gw: str, role: str = "requester") -> dict[str, Any]:
    """A fresh account: the login answer plus ``username``, ``password`` and bearer ``headers``."""
    name = f"u{uuid.uuid4().hex[:10]}"
    reg = httpx.post(
        f"{gw}/api/v1/auth/register",
        json={"username": name, "email": f"{name}@example.com", "password": PASSWORD, "role": role},
    )
    assert reg.status_code == 201, reg.text
    login = httpx.post(f"{gw}/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    assert login.status_code == 200, login.text
    body = login.json()
    return {
        **body,
        "username": name,
        "password": PASSWORD,
        "headers": {"authorization": f"Bearer {body['access_token']}"},
    }


def provider_key(gw: str) -> dict[str, str]:
    """A provider account and an API key for it: ``{api_key, provider_id, ...}``."""
    user = new_user(gw, "provider")
    key = httpx.post(f"{gw}/api/v1/auth/api-keys", json={"name": "test"}, headers=user["headers"])
    assert key.status_code == 201, key.text
    return key.json()
