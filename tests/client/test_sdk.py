"""The SDK: sync and async clients against the real cluster, token rotation, log resume, and
the retry policy against a real (tiny, scripted) HTTP server on a free port."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dante_client import (
    AsyncClient,
    Client,
    NotFound,
    RetryPolicy,
    ServiceUnavailable,
    Tokens,
    Unreachable,
)

from localdev.cluster import LocalCluster, free_port
from tests.support.accounts import new_user

pytestmark = pytest.mark.e2e

SCRIPT = {
    "type": "script",
    "name": "sdk",
    "params": {"script_content": "for i in 1 2 3 4 5; do echo n$i; done"},
}


def test_sync_client_end_to_end(cluster: LocalCluster, tmp_path: Path) -> None:
    user = new_user(cluster.gateway_url)
    rotated: list[Tokens] = []
    with Client(cluster.gateway_url, on_tokens=rotated.append) as dante:
        dante.login(user["username"], user["password"])
        assert dante.whoami().username == user["username"]
        sub = dante.submit(SCRIPT)
        lines = list(dante.follow_logs(sub.job_id))
        assert [line.line for line in lines] == ["n1", "n2", "n3", "n4", "n5"]
        assert all(line.id for line in lines)
        job = dante.wait(sub.job_id)
        assert job.status == "completed" and job.exit_code == 0 and job.terminal
        assert [e.to_state for e in dante.events(sub.job_id)][-1] == "completed"
        assert [j.job_id for j in dante.iter_jobs()] == [sub.job_id]

        # resume from any line: exactly the lines after it, none repeated
        for k in (0, 2, 4):
            again = list(dante.follow_logs(sub.job_id, last_event_id=lines[k].id))
            assert [line.line for line in again] == [x.line for x in lines[k + 1 :]]

        src = tmp_path / "in.txt"
        src.write_text("payload\n")
        seen: list[tuple[int, int]] = []
        obj = dante.upload(src, "sdk/in.txt", progress=lambda d, t: seen.append((d, t)))
        assert obj.size == 8 and seen[-1] == (8, 8)
        dante.download("sdk/in.txt", tmp_path / "out.txt")
        assert (tmp_path / "out.txt").read_text() == "payload\n"
        assert [o.key for o in dante.iter_objects("sdk/")] == ["sdk/in.txt"]
        dante.delete("sdk/in.txt")
        with pytest.raises(NotFound):
            dante.stat("sdk/in.txt")
    assert len(rotated) >= 1  # the login itself is reported to on_tokens


def test_a_401_is_answered_by_a_refresh_and_one_retry(cluster: LocalCluster) -> None:
    user = new_user(cluster.gateway_url)
    rotated: list[Tokens] = []
    # an access token the server refuses (and whose expiry the client cannot read)
    with Client(
        cluster.gateway_url,
        token="not-a-valid-token",
        refresh_token=user["refresh_token"],
        on_tokens=rotated.append,
    ) as dante:
        assert dante.whoami().username == user["username"]
        assert len(rotated) == 1
        assert rotated[0].refresh_token != user["refresh_token"]
        assert dante.tokens.access_token == rotated[0].access_token


async def test_async_client_end_to_end(cluster: LocalCluster, tmp_path: Path) -> None:
    user = new_user(cluster.gateway_url)
    async with AsyncClient(cluster.gateway_url) as dante:
        await dante.login(user["username"], user["password"])
        sub = await dante.submit(SCRIPT)
        lines = [line async for line in dante.follow_logs(sub.job_id)]
        assert [line.line for line in lines] == ["n1", "n2", "n3", "n4", "n5"]
        tail = [x async for x in dante.follow_logs(sub.job_id, last_event_id=lines[1].id)]
        assert [x.line for x in tail] == ["n3", "n4", "n5"]
        job = await dante.wait(sub.job_id)
        assert job.status == "completed"
        rerun = await dante.rerun(sub.job_id)
        assert (await dante.wait(rerun.job_id)).status == "completed"
        assert (await dante.logs(rerun.job_id)).splitlines() == ["n1", "n2", "n3", "n4", "n5"]

        src = tmp_path / "a.bin"
        src.write_bytes(b"x" * 100_000)
        await dante.upload(src, "async/a.bin")
        await dante.download("async/a.bin", tmp_path / "b.bin")
        assert (tmp_path / "b.bin").read_bytes() == src.read_bytes()


# --- retries against a scripted server ----------------------------------------------------------


class Scripted(ThreadingHTTPServer):
    """Answers each (method, path) with the next scripted reply; "drop" closes the connection
    without answering. Counts the requests it saw."""

    daemon_threads = True

    def __init__(self, replies: dict[tuple[str, str], list[object]]) -> None:
        self.replies = replies
        self.hits: dict[tuple[str, str], int] = {}
        self.keys: list[str | None] = []  # the Idempotency-Key of each request, in order
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(BaseHTTPRequestHandler):
    server: Scripted

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self) -> None:
        key = (self.command, self.path)
        self.server.hits[key] = self.server.hits.get(key, 0) + 1
        self.server.keys.append(self.headers.get("idempotency-key"))
        if length := int(self.headers.get("content-length") or 0):
            self.rfile.read(length)
        script = self.server.replies[key]
        reply = script.pop(0) if len(script) > 1 else script[0]
        if reply == "drop":
            self.close_connection = True
            return
        status, body, headers = reply  # type: ignore[misc]
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _reply


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted({})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


JOB = {"job_id": "j1", "status": "running"}
FAST = RetryPolicy(retries=3, base_delay=0.01, max_delay=0.05)


def _client(server: Scripted) -> Client:
    return Client(f"http://127.0.0.1:{server.server_address[1]}", token="t", retry=FAST)


def test_idempotent_calls_are_retried_on_502_503_504_and_drops(scripted: Scripted) -> None:
    busy = (503, {"error": "service_unavailable", "detail": "busy"}, {})
    scripted.replies[("GET", "/api/v1/jobs/j1")] = [
        (502, {}, {}),
        busy,
        "drop",
        (504, {}, {}),
        (200, JOB, {}),
    ]
    with _client(scripted) as dante:
        with pytest.raises(ServiceUnavailable):  # 3 retries are not enough for 4 failures
            dante.job("j1")
        assert scripted.hits[("GET", "/api/v1/jobs/j1")] == 4
        assert dante.job("j1").status == "running"  # the 5th answer


def test_a_post_is_never_repeated_after_it_may_have_arrived(scripted: Scripted) -> None:
    scripted.replies[("POST", "/api/v1/jobs/j1/cancel")] = ["drop"]
    with _client(scripted) as dante, pytest.raises(Unreachable):
        dante.cancel("j1")
    assert scripted.hits[("POST", "/api/v1/jobs/j1/cancel")] == 1
    assert scripted.keys == [None]


def test_a_submission_is_retried_with_its_one_idempotency_key(scripted: Scripted) -> None:
    unknown = (503, {"error": "submission_unknown", "detail": "retry"}, {"retry-after": "0"})
    accepted = {"job_id": "j3", "status": "queued"}
    scripted.replies[("POST", "/api/v1/jobs")] = [unknown, "drop", (202, accepted, {})]
    with _client(scripted) as dante:
        assert dante.submit(SCRIPT).job_id == "j3"
        assert scripted.hits[("POST", "/api/v1/jobs")] == 3
        assert len(set(scripted.keys)) == 1 and scripted.keys[0]  # one key, on every try
        scripted.replies[("POST", "/api/v1/jobs")] = [(202, accepted, {})]
        dante.submit(SCRIPT)  # a new submission: a new key
        dante.submit(SCRIPT, idempotency_key="mine")
    assert scripted.keys[3] not in (None, scripted.keys[0])
    assert scripted.keys[4] == "mine"


def test_429_is_retried_after_retry_after_even_for_a_post(scripted: Scripted) -> None:
    accepted = {"job_id": "j2", "status": "queued"}
    limited = (429, {"error": "rate_limited", "detail": "slow down"}, {"retry-after": "0"})
    scripted.replies[("POST", "/api/v1/jobs")] = [limited, (202, accepted, {})]
    with _client(scripted) as dante:
        assert dante.submit(SCRIPT).job_id == "j2"
    assert scripted.hits[("POST", "/api/v1/jobs")] == 2


def test_connection_refused_is_retried_then_reported() -> None:
    port = free_port()  # nothing listens there
    dante = Client(f"http://127.0.0.1:{port}", token="t", retry=FAST)
    with dante, pytest.raises(Unreachable) as caught:
        dante.job("j1")
    assert "cannot reach the gateway" in str(caught.value)
    assert caught.value.hint() and "DANTE_URL" in caught.value.hint()
