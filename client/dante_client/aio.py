"""``AsyncClient``: the same API as ``Client`` (client.py), every call awaited, for notebooks
and pipelines that already run an event loop."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx

from dante_client import _calls as calls
from dante_client import models, sse
from dante_client._follow import Follow
from dante_client._policy import (
    IDEMPOTENT_METHODS,
    Attempts,
    RetryPolicy,
    http_options,
    response_error,
    transport_error,
)
from dante_client._tokens import TokenListener, TokenState, TokenStore
from dante_client.errors import DanteError
from dante_client.transfer import (
    CHUNK,
    Progress,
    check_range,
    finish_download,
    part_path,
    range_from,
    rerun_spec,
    resume_point,
)

T = TypeVar("T")


class AsyncClient:
    """See ``Client``; use as ``async with AsyncClient(url, token=…) as dante: …``."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        refresh_token: str | None = None,
        expires_at: datetime | None = None,
        on_tokens: TokenListener | None = None,
        token_store: TokenStore | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str = "dante-client",
    ) -> None:
        self.url = url.rstrip("/")
        self.tokens = TokenState(token, refresh_token, expires_at, on_tokens)
        self.retry = retry or RetryPolicy()
        self.token_store = token_store
        self._http = httpx.AsyncClient(**http_options(self.url, timeout, transport, user_agent))
        self._refresh_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _refresh(self, used: str | None) -> None:
        store = self.token_store
        async with self._refresh_lock:
            if self.tokens.access_token != used:
                return
            with store.lock() if store else nullcontext():
                kept = store.load() if store else None
                if kept and kept.refresh_token != self.tokens.refresh_token:
                    self.tokens.update(kept, notify=False)
                    return
                assert self.tokens.refresh_token
                call = calls.refresh(self.tokens.refresh_token)
                resp = await self._send(
                    call.method, call.path, json=call.json, auth=False, idempotent=False
                )
                tokens = call.parse(resp)
                self.tokens.update(tokens)
                if store:
                    store.save(tokens)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        body: Callable[[], Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        idempotent: bool | None = None,
        stream: bool = False,
        request_timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        tries = Attempts(
            self.retry,
            self.url,
            method in IDEMPOTENT_METHODS if idempotent is None else idempotent,
            auth,
            self.tokens,
        )
        while True:
            if auth and self.tokens.stale():
                await self._refresh(self.tokens.access_token)
            used = self.tokens.access_token
            all_headers = {**(headers or {}), **(self.tokens.header() if auth else {})}
            request = self._http.build_request(
                method,
                path,
                params=params,
                json=json,
                content=body() if body else None,
                headers=all_headers,
                timeout=request_timeout or httpx.USE_CLIENT_DEFAULT,
            )
            try:
                resp = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                await asyncio.sleep(tries.after_exception(exc))
                continue
            if tries.renew(resp):
                await resp.aclose()
                await self._refresh(used)
                continue
            if resp.status_code >= 400:
                if (delay := tries.retry_after(resp)) is not None:
                    await resp.aclose()
                    await asyncio.sleep(delay)
                    continue
                await resp.aread()
                raise response_error(resp)
            return resp

    async def _call(self, call: calls.Call[T]) -> T:
        resp = await self._send(
            call.method,
            call.path,
            params=call.params,
            json=call.json,
            auth=call.auth,
            headers=call.headers,
            idempotent=call.idempotent,
        )
        return call.parse(resp)

    # --- accounts -------------------------------------------------------------------------------

    async def login(self, username: str, password: str) -> models.Tokens:
        tokens = await self._call(calls.login(username, password))
        self.tokens.update(tokens)
        return tokens

    async def register(
        self, username: str, email: str, password: str, role: str = "requester"
    ) -> models.User:
        return await self._call(calls.register(username, email, password, role))

    async def logout(self) -> None:
        await self._call(calls.logout(self.tokens.refresh_token))
        self.tokens.access_token = self.tokens.refresh_token = None

    async def whoami(self) -> models.User:
        return await self._call(calls.whoami())

    # --- jobs -----------------------------------------------------------------------------------

    async def submit(
        self, spec: dict[str, Any], idempotency_key: str | None = None
    ) -> models.Submitted:
        """Submit a job; see :meth:`dante_client.Client.submit` for ``idempotency_key``."""
        return await self._call(calls.submit(spec, idempotency_key))

    async def job(self, job_id: str) -> models.Job:
        return await self._call(calls.job(job_id))

    async def jobs(
        self,
        state: str | None = None,
        tag: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> models.JobPage:
        return await self._call(calls.jobs(state, tag, limit, cursor))

    async def events(self, job_id: str) -> list[models.JobEvent]:
        return await self._call(calls.events(job_id))

    async def logs(self, job_id: str) -> str:
        return await self._call(calls.logs(job_id))

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self._call(calls.cancel(job_id))

    async def spec(self, job_id: str) -> dict[str, Any]:
        return await self._call(calls.spec(job_id))

    async def rerun(self, job_id: str) -> models.Submitted:
        return await self.submit(rerun_spec(await self.spec(job_id)))

    async def wait(
        self, job_id: str, *, poll: float = 1.0, max_wait: float | None = None
    ) -> models.Job:
        deadline = None if max_wait is None else time.monotonic() + max_wait
        while True:
            try:
                job = await self.job(job_id)
                if job.terminal:
                    return job
            except DanteError as exc:
                if exc.status != 404:
                    raise
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not end in {max_wait} s")
            await asyncio.sleep(poll)

    async def follow_logs(
        self,
        job_id: str,
        *,
        last_event_id: str | None = None,
        on_idle: Callable[[], None] | None = None,
        max_outage: float = 300.0,
    ) -> AsyncIterator[models.LogLine]:
        """See ``Client.follow_logs``: resumes after a dropped connection, no loss, no repeat."""
        follow = Follow(self.retry, last_event_id, max_outage)
        while True:
            try:
                resp = await self._send(
                    "GET",
                    f"/api/v1/jobs/{job_id}/logs",
                    params={"follow": "true"},
                    headers=follow.headers(),
                    stream=True,
                    request_timeout=httpx.Timeout(30.0, read=60.0),
                )
                try:
                    follow.connected()
                    async for event in sse.aparse(resp.aiter_lines()):
                        if event.event == "end":
                            return
                        if event.comment and on_idle:
                            on_idle()
                        if (line := follow.line(event)) is not None:
                            yield line
                finally:
                    await resp.aclose()
            except httpx.TransportError as exc:
                follow.failed(transport_error(self.url, exc))
            except DanteError as exc:
                follow.failed(exc)
            await asyncio.sleep(follow.delay())

    # --- storage --------------------------------------------------------------------------------

    async def upload(
        self,
        path: str | os.PathLike[str],
        key: str,
        *,
        content_type: str = "application/octet-stream",
        progress: Progress | None = None,
    ) -> models.StoredObject:
        src = Path(path)
        size = (await anyio.Path(src).stat()).st_size

        async def chunks() -> AsyncIterator[bytes]:
            done = 0
            async with await anyio.open_file(src, "rb") as fh:
                while chunk := await fh.read(CHUNK):
                    done += len(chunk)
                    yield chunk
                    if progress:
                        progress(done, size)

        resp = await self._send(
            "PUT",
            calls.object_path(key),
            body=chunks,
            headers={"content-type": content_type, "content-length": str(size)},
            request_timeout=httpx.Timeout(300.0, connect=10.0),
        )
        return models.StoredObject.model_validate(resp.json())

    async def stat(self, key: str) -> models.StoredObject:
        return await self._call(calls.stat_object(key))

    async def download(
        self, key: str, path: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> Path:
        dst = Path(path)
        info = await self.stat(key)
        part = part_path(dst, info.etag)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tries = Attempts(self.retry, self.url, idempotent=True)
        while True:
            have = resume_point(part, info.size)
            if have >= info.size and info.size > 0:
                return finish_download(part, dst, info.size)
            try:
                resp = await self._send(
                    "GET",
                    calls.object_path(key),
                    headers=range_from(have),
                    stream=True,
                    request_timeout=httpx.Timeout(60.0, connect=10.0),
                )
                try:
                    resumed = check_range(resp.status_code, resp.headers, have)
                    done = have if resumed else 0
                    async with await anyio.open_file(part, "ab" if resumed else "wb") as out:
                        async for chunk in resp.aiter_bytes(CHUNK):
                            await out.write(chunk)
                            done += len(chunk)
                            if progress:
                                progress(done, info.size)
                finally:
                    await resp.aclose()
                return finish_download(part, dst, info.size)
            except httpx.TransportError as exc:
                await asyncio.sleep(tries.after_exception(exc))

    async def objects(
        self, prefix: str = "", *, limit: int = 100, cursor: str | None = None
    ) -> models.ObjectPage:
        return await self._call(calls.objects(prefix, limit, cursor))

    async def delete(self, key: str) -> None:
        await self._call(calls.delete_object(key))

    # --- fleet, usage, keys, admin --------------------------------------------------------------

    async def providers(
        self, status: str | None = None, gpu_model: str | None = None
    ) -> list[models.Provider]:
        return await self._call(calls.providers(status, gpu_model))

    async def usage(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> models.Usage:
        return await self._call(calls.usage(since, until))

    async def create_api_key(
        self, name: str = "default", expires_in_days: int | None = None
    ) -> models.NewApiKey:
        return await self._call(calls.create_api_key(name, expires_in_days))

    async def api_keys(self) -> list[models.ApiKey]:
        return await self._call(calls.api_keys())

    async def revoke_api_key(self, key_id: str) -> None:
        await self._call(calls.revoke_api_key(key_id))

    async def users(
        self, role: str | None = None, query: str | None = None, limit: int = 100
    ) -> list[models.User]:
        return await self._call(calls.users(role, query, limit))

    async def set_role(self, user_id: str, role: str) -> models.User:
        return await self._call(calls.set_role(user_id, role))

    async def set_active(self, user_id: str, active: bool) -> models.User:
        return await self._call(calls.set_active(user_id, active))
