"""Presigning a job's inputs, outputs and log with the storage service, as the scheduler.

The scheduler calls storage's ``POST /api/v1/storage/presign/batch`` with its own service
token (client credentials from the auth service) naming the job's owner; the daemon then holds
only URLs for exactly those keys and no token at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import httpx
import structlog

from scheduler.errors import MissingInput, StorageUnavailable

log = structlog.get_logger(__name__)

BATCH_PATH = "/api/v1/storage/presign/batch"


class TokenSource(Protocol):
    async def headers(self) -> dict[str, str]: ...

    def invalidate(self) -> None: ...


@dataclass(frozen=True)
class PresignedIO:
    inputs: dict[str, str]
    outputs: dict[str, str]


class HttpPresigner:
    def __init__(
        self,
        storage_base: Callable[[], Awaitable[str]],
        http: httpx.AsyncClient,
        tokens: TokenSource,
        expires_in: int,
    ) -> None:
        self._base = storage_base
        self._http = http
        self._tokens = tokens
        self._expires_in = expires_in

    async def presign(self, owner: str, inputs: list[str], outputs: list[str]) -> PresignedIO:
        body = {
            "inputs": inputs,
            "outputs": outputs,
            "owner": owner,
            "expires_in": self._expires_in,
        }
        try:
            url = await self._base() + BATCH_PATH
            resp = await self._http.post(
                url, json=body, headers=await self._tokens.headers(), timeout=10
            )
        except Exception as exc:  # unreachable, no instance, no token: all pass with time
            raise StorageUnavailable(f"{type(exc).__name__}: {exc}"[:200]) from exc
        if resp.status_code == 200:
            data = resp.json()
            return PresignedIO(inputs=dict(data["inputs"]), outputs=dict(data["outputs"]))
        detail = _detail(resp)
        if resp.status_code == 404 and inputs:
            # storage checks each input exists; a missing one will never appear by waiting
            raise MissingInput(f"an input does not exist in the owner's storage: {detail}")
        if resp.status_code == 401:
            self._tokens.invalidate()  # rotated keys or a revoked token: fetch anew next time
        log.warning("presign.refused", status=resp.status_code, detail=detail)
        raise StorageUnavailable(f"storage answered {resp.status_code}: {detail}"[:200])


def _detail(resp: httpx.Response) -> str:
    try:
        data = resp.json()
        return str(data.get("detail") or data.get("error"))
    except ValueError:
        return resp.text[:120]
