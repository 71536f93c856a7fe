"""The synchronous client: ``Client(url, token=…)``. ``AsyncClient`` (aio.py) is the same API
with ``await``."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

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
    file_chunks,
    finish_download,
    part_path,
    range_from,
    rerun_spec,
    resume_point,
)

T = TypeVar("T")
Body = Callable[[], Any]  # a fresh request body per attempt (a retried upload reopens its file)


class Client:
    """A session with the Dante gateway.

    ``token`` is an access token; with ``refresh_token`` the client renews it before it expires
    and after a 401, and calls ``on_tokens`` with every rotated pair so the caller can store it.
    """

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
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "dante-client",
    ) -> None:
        self.url = url.rstrip("/")
        self.tokens = TokenState(token, refresh_token, expires_at, on_tokens)
        self.retry = retry or RetryPolicy()
        self.token_store = token_store
        self._http = httpx.Client(**http_options(self.url, timeout, transport, user_agent))
        self._refresh_lock = threading.Lock()

    # --- plumbing -------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _refresh(self, used: str | None) -> None:
        """Trade the refresh token for a new pair, once even if several threads ask."""
        store = self.token_store
        with self._refresh_lock, store.lock() if store else nullcontext():
            if self.tokens.access_token != used:
                return  # another thread already did
            if store and (kept := store.load()) and kept.refresh_token != self.tokens.refresh_token:
                self.tokens.update(kept, notify=False)  # another process already did
                return
            assert self.tokens.refresh_token
            call = calls.refresh(self.tokens.refresh_token)
            # Not retried after it may have been sent: a refresh token works once, and a
            # replay of a spent one revokes the whole session (auth's reuse detection).
            resp = self._send(call.method, call.path, json=call.json, auth=False, idempotent=False)
            tokens = call.parse(resp)
            self.tokens.update(tokens)
            if store:
                store.save(tokens)

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        body: Body | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        idempotent: bool | None = None,
        stream: bool = False,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """One call with the retry policy and token renewal; raises a DanteError on 4xx/5xx."""
        tries = Attempts(
            self.retry,
            self.url,
            method in IDEMPOTENT_METHODS if idempotent is None else idempotent,
            auth,
            self.tokens,
        )
        while True:
            if auth and self.tokens.stale():
                self._refresh(self.tokens.access_token)
            used = self.tokens.access_token
            all_headers = {**(headers or {}), **(self.tokens.header() if auth else {})}
            request = self._http.build_request(
                method,
                path,
                params=params,
                json=json,
                content=body() if body else None,
                headers=all_headers,
                timeout=timeout or httpx.USE_CLIENT_DEFAULT,
            )
            try:
                resp = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                time.sleep(tries.after_exception(exc))
                continue
            if tries.renew(resp):
                resp.close()
                self._refresh(used)
                continue
            if resp.status_code >= 400:
                if (delay := tries.retry_after(resp)) is not None:
                    resp.close()
                    time.sleep(delay)
                    continue
                resp.read()
                raise response_error(resp)
            return resp

    def _call(self, call: calls.Call[T]) -> T:
        resp = self._send(
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

    def login(self, username: str, password: str) -> models.Tokens:
        """Log in; the client then uses (and renews) the new tokens."""
        tokens = self._call(calls.login(username, password))
        self.tokens.update(tokens)
        return tokens

    def register(
        self, username: str, email: str, password: str, role: str = "requester"
    ) -> models.User:
        return self._call(calls.register(username, email, password, role))

    def logout(self) -> None:
        """End this session on the server (its refresh token is revoked)."""
        self._call(calls.logout(self.tokens.refresh_token))
        self.tokens.access_token = self.tokens.refresh_token = None

    def whoami(self) -> models.User:
        return self._call(calls.whoami())

    # --- jobs -----------------------------------------------------------------------------------

    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> models.Submitted:
        """Submit a job (the gateway's JSON job spec; see ``jobfile.load`` for YAML files).

        Every submission carries an ``Idempotency-Key`` (a fresh UUID unless one is given) and
        is retried with that same key on a dropped connection or a 502/503/504: the gateway
        answers the same job, never a second one. Pass your own key to make a retry across
        processes (a re-run script) safe too."""
        return self._call(calls.submit(spec, idempotency_key))

    def job(self, job_id: str) -> models.Job:
        return self._call(calls.job(job_id))

    def jobs(
        self,
        state: str | None = None,
        tag: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> models.JobPage:
        """One page of the caller's jobs, newest first; pass ``next_cursor`` on for more."""
        return self._call(calls.jobs(state, tag, limit, cursor))

    def iter_jobs(self, state: str | None = None, tag: str | None = None) -> Iterator[models.Job]:
        cursor = None
        while True:
            page = self.jobs(state, tag, 200, cursor)
            yield from page.jobs
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def events(self, job_id: str) -> list[models.JobEvent]:
        return self._call(calls.events(job_id))

    def logs(self, job_id: str) -> str:
        """The whole log so far, as text."""
        return self._call(calls.logs(job_id))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call(calls.cancel(job_id))

    def spec(self, job_id: str) -> dict[str, Any]:
        """The job as it was submitted."""
        return self._call(calls.spec(job_id))

    def rerun(self, job_id: str) -> models.Submitted:
        """Submit the same job again (a new job id)."""
        return self.submit(rerun_spec(self.spec(job_id)))

    def wait(self, job_id: str, *, poll: float = 1.0, max_wait: float | None = None) -> models.Job:
        """Poll until the job has ended. A just-submitted job may 404 for a moment."""
        deadline = None if max_wait is None else time.monotonic() + max_wait
        while True:
            try:
                job = self.job(job_id)
                if job.terminal:
                    return job
            except DanteError as exc:
                if exc.status != 404:
                    raise
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not end in {max_wait} s")
            time.sleep(poll)

    def follow_logs(
        self,
        job_id: str,
        *,
        last_event_id: str | None = None,
        on_idle: Callable[[], None] | None = None,
        max_outage: float = 300.0,
    ) -> Iterator[models.LogLine]:
        """The job's log lines as they are written, until the job has ended.

        A dropped connection (a gateway restart, a network blip) is reconnected with the id of
        the last line seen (``Last-Event-ID``), so the gateway resumes right after it: no line
        is lost or repeated. ``on_idle`` is called on each keep-alive (about every 2 s while
        nothing is printed). Gives up after ``max_outage`` seconds without a connection.
        """
        follow = Follow(self.retry, last_event_id, max_outage)
        while True:
            try:
                resp = self._send(
                    "GET",
                    f"/api/v1/jobs/{job_id}/logs",
                    params={"follow": "true"},
                    headers=follow.headers(),
                    stream=True,
                    timeout=httpx.Timeout(30.0, read=60.0),
                )
                try:
                    follow.connected()
                    for event in sse.parse(resp.iter_lines()):
                        if event.event == "end":
                            return
                        if event.comment and on_idle:
                            on_idle()
                        if (line := follow.line(event)) is not None:
                            yield line
                finally:
                    resp.close()
            except httpx.TransportError as exc:  # dropped while reading the stream
                follow.failed(transport_error(self.url, exc))
            except DanteError as exc:
                follow.failed(exc)
            time.sleep(follow.delay())

    # --- storage --------------------------------------------------------------------------------

    def upload(
        self,
        path: str | os.PathLike[str],
        key: str,
        *,
        content_type: str = "application/octet-stream",
        progress: Progress | None = None,
    ) -> models.StoredObject:
        """Stream a local file to ``key`` (constant memory: 1 MiB at a time)."""
        src = Path(path)
        size = src.stat().st_size
        resp = self._send(
            "PUT",
            calls.object_path(key),
            body=lambda: file_chunks(src, progress, size),
            headers={"content-type": content_type, "content-length": str(size)},
            timeout=httpx.Timeout(300.0, connect=10.0),
        )
        return models.StoredObject.model_validate(resp.json())

    def stat(self, key: str) -> models.StoredObject:
        return self._call(calls.stat_object(key))

    def download(
        self, key: str, path: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> Path:
        """Stream ``key`` into a local file. An interrupted download (this call's connection
        dropping, or an earlier run killed) continues where it stopped, with a Range request,
        as long as the object has not changed (same ETag)."""
        dst = Path(path)
        info = self.stat(key)
        part = part_path(dst, info.etag)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tries = Attempts(self.retry, self.url, idempotent=True)
        while True:
            have = resume_point(part, info.size)
            if have >= info.size and info.size > 0:
                return finish_download(part, dst, info.size)
            try:
                resp = self._send(
                    "GET",
                    calls.object_path(key),
                    headers=range_from(have),
                    stream=True,
                    timeout=httpx.Timeout(60.0, connect=10.0),
                )
                try:
                    mode = "ab" if check_range(resp.status_code, resp.headers, have) else "wb"
                    done = have if mode == "ab" else 0
                    with part.open(mode) as out:
                        for chunk in resp.iter_bytes(CHUNK):
                            out.write(chunk)
                            done += len(chunk)
                            if progress:
                                progress(done, info.size)
                finally:
                    resp.close()
                return finish_download(part, dst, info.size)
            except httpx.TransportError as exc:
                time.sleep(tries.after_exception(exc))

    def objects(
        self, prefix: str = "", *, limit: int = 100, cursor: str | None = None
    ) -> models.ObjectPage:
        return self._call(calls.objects(prefix, limit, cursor))

    def iter_objects(self, prefix: str = "") -> Iterator[models.StoredObject]:
        cursor = None
        while True:
            page = self.objects(prefix, limit=1000, cursor=cursor)
            yield from page.objects
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def delete(self, key: str) -> None:
        self._call(calls.delete_object(key))

    # --- fleet, usage ---------------------------------------------------------------------------

    def providers(
        self, status: str | None = None, gpu_model: str | None = None
    ) -> list[models.Provider]:
        return self._call(calls.providers(status, gpu_model))

    def usage(self, since: datetime | None = None, until: datetime | None = None) -> models.Usage:
        return self._call(calls.usage(since, until))

    # --- provider keys, admin -------------------------------------------------------------------

    def create_api_key(
        self, name: str = "default", expires_in_days: int | None = None
    ) -> models.NewApiKey:
        return self._call(calls.create_api_key(name, expires_in_days))

    def api_keys(self) -> list[models.ApiKey]:
        return self._call(calls.api_keys())

    def revoke_api_key(self, key_id: str) -> None:
        self._call(calls.revoke_api_key(key_id))

    def users(
        self, role: str | None = None, query: str | None = None, limit: int = 100
    ) -> list[models.User]:
        return self._call(calls.users(role, query, limit))

    def set_role(self, user_id: str, role: str) -> models.User:
        return self._call(calls.set_role(user_id, role))

    def set_active(self, user_id: str, active: bool) -> models.User:
        return self._call(calls.set_active(user_id, active))
