"""Every plain call of the public API, described once (path, method, how to read the answer)
and sent by either the sync or the async client."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from dante_client import models

T = TypeVar("T")

API = "/api/v1"


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    auth: bool = True
    headers: dict[str, str] | None = None
    idempotent: bool | None = None  # None: by the method (GET, PUT, DELETE ... are)


def _model(cls: type[T]) -> Callable[[httpx.Response], T]:
    return lambda r: cls.model_validate(r.json())  # type: ignore[attr-defined]


def _none(_: httpx.Response) -> None:
    return None


def _json(r: httpx.Response) -> Any:
    return r.json()


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        if v is None:
            continue
        out[k] = v.isoformat() if isinstance(v, datetime) else v
    return out


def object_path(key: str) -> str:
    """A storage key in a URL: each part escaped, the slashes kept."""
    return f"{API}/storage/objects/" + quote(key, safe="/")


# --- auth ---------------------------------------------------------------------------------------


def login(username: str, password: str) -> Call[models.Tokens]:
    body = {"username": username, "password": password}
    return Call("POST", f"{API}/auth/login", _model(models.Tokens), json=body, auth=False)


def register(username: str, email: str, password: str, role: str) -> Call[models.User]:
    body = {"username": username, "email": email, "password": password, "role": role}
    return Call("POST", f"{API}/auth/register", _model(models.User), json=body, auth=False)


def refresh(refresh_token: str) -> Call[models.Tokens]:
    body = {"refresh_token": refresh_token}
    return Call("POST", f"{API}/auth/refresh", _model(models.Tokens), json=body, auth=False)


def logout(refresh_token: str | None) -> Call[None]:
    return Call("POST", f"{API}/auth/logout", _none, json={"refresh_token": refresh_token})


def whoami() -> Call[models.User]:
    return Call("GET", f"{API}/auth/me", _model(models.User))


# --- jobs ---------------------------------------------------------------------------------------


IDEMPOTENCY_HEADER = "Idempotency-Key"


def submit(spec: dict[str, Any], idempotency_key: str | None = None) -> Call[models.Submitted]:
    """A submission named by an ``Idempotency-Key`` (a fresh one unless given): the gateway
    answers a retry with the same key with the same job, so the POST is safe to retry on a
    dropped connection or a 503 (``submission_unknown`` included)."""
    key = idempotency_key or str(uuid.uuid4())
    return Call(
        "POST",
        f"{API}/jobs",
        _model(models.Submitted),
        json=spec,
        headers={IDEMPOTENCY_HEADER: key},
        idempotent=True,
    )


def job(job_id: str) -> Call[models.Job]:
    return Call("GET", f"{API}/jobs/{quote(job_id, safe='')}", _model(models.Job))


def jobs(
    state: str | None, tag: str | None, limit: int, cursor: str | None
) -> Call[models.JobPage]:
    params = _clean({"state": state, "tag": tag, "limit": limit, "cursor": cursor})
    return Call("GET", f"{API}/jobs", _model(models.JobPage), params=params)


def events(job_id: str) -> Call[list[models.JobEvent]]:
    def parse(r: httpx.Response) -> list[models.JobEvent]:
        return [models.JobEvent.model_validate(e) for e in r.json()["events"]]

    return Call("GET", f"{API}/jobs/{quote(job_id, safe='')}/events", parse)


def logs(job_id: str) -> Call[str]:
    return Call("GET", f"{API}/jobs/{quote(job_id, safe='')}/logs", lambda r: r.text)


def spec(job_id: str) -> Call[dict[str, Any]]:
    return Call(
        "GET", f"{API}/jobs/{quote(job_id, safe='')}/spec", lambda r: dict(r.json()["spec"])
    )


def cancel(job_id: str) -> Call[dict[str, Any]]:
    return Call("POST", f"{API}/jobs/{quote(job_id, safe='')}/cancel", _json)


def usage(since: datetime | None, until: datetime | None) -> Call[models.Usage]:
    params = _clean({"since": since, "until": until})
    return Call("GET", f"{API}/usage", _model(models.Usage), params=params)


# --- providers ----------------------------------------------------------------------------------


def providers(status: str | None, gpu_model: str | None) -> Call[list[models.Provider]]:
    def parse(r: httpx.Response) -> list[models.Provider]:
        return [models.Provider.model_validate(p) for p in r.json()["providers"]]

    params = _clean({"status": status, "gpu_model": gpu_model, "limit": 1000})
    return Call("GET", f"{API}/providers", parse, params=params)


# --- storage ------------------------------------------------------------------------------------


def objects(prefix: str, limit: int, cursor: str | None) -> Call[models.ObjectPage]:
    params = _clean({"prefix": prefix, "limit": limit, "cursor": cursor})
    return Call("GET", f"{API}/storage/objects", _model(models.ObjectPage), params=params)


def delete_object(key: str) -> Call[None]:
    return Call("DELETE", object_path(key), _none)


def stat_object(key: str) -> Call[models.StoredObject]:
    def parse(r: httpx.Response) -> models.StoredObject:
        return models.StoredObject(
            key=key,
            size=int(r.headers.get("content-length", 0)),
            etag=r.headers.get("etag", "").strip('"'),
            content_type=r.headers.get("content-type"),
        )

    return Call("HEAD", object_path(key), parse)


# --- provider keys and admin --------------------------------------------------------------------


def create_api_key(name: str, expires_in_days: int | None) -> Call[models.NewApiKey]:
    body = _clean({"name": name, "expires_in_days": expires_in_days})
    return Call("POST", f"{API}/auth/api-keys", _model(models.NewApiKey), json=body)


def api_keys() -> Call[list[models.ApiKey]]:
    def parse(r: httpx.Response) -> list[models.ApiKey]:
        return [models.ApiKey.model_validate(k) for k in r.json()]

    return Call("GET", f"{API}/auth/api-keys", parse)


def revoke_api_key(key_id: str) -> Call[None]:
    return Call("DELETE", f"{API}/auth/api-keys/{quote(key_id, safe='')}", _none)


def users(role: str | None, query: str | None, limit: int) -> Call[list[models.User]]:
    def parse(r: httpx.Response) -> list[models.User]:
        return [models.User.model_validate(u) for u in r.json()["users"]]

    params = _clean({"role": role, "q": query, "limit": limit})
    return Call("GET", f"{API}/auth/users", parse, params=params)


def set_role(user_id: str, role: str) -> Call[models.User]:
    path = f"{API}/auth/users/{quote(user_id, safe='')}/role"
    return Call("PUT", path, _model(models.User), json={"role": role})


def set_active(user_id: str, active: bool) -> Call[models.User]:
    verb = "enable" if active else "disable"
    return Call("POST", f"{API}/auth/users/{quote(user_id, safe='')}/{verb}", _model(models.User))
