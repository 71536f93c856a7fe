"""``GET /api/v1/jobs/{id}/logs`` once the live log is gone (the LOGS stream's day, or its
per-job bound): served from the archived attempt log in storage, never an empty 200; with
neither, a 404 that says why; ``?attempt=N`` picks one attempt."""

from __future__ import annotations

import asyncio

import httpx

from localdev.cluster import LocalCluster
from shared.contracts import log_key, log_subject
from shared.nats import UserCredentials, connect
from tests.support.accounts import new_user
from tests.support.jobs import wait_status


async def _expire_live_log(cluster: LocalCluster, job_id: str) -> None:
    """What the stream's max_age (or the per-job bound) does to an old job's chunks."""
    assert cluster.nats_creds is not None
    nc = await connect(cluster.nats_url, "test", UserCredentials.from_file(str(cluster.nats_creds)))
    try:
        js = nc.jetstream()
        await js.purge_stream("LOGS", subject=log_subject(job_id))
        info = await js.stream_info("LOGS", subjects_filter=log_subject(job_id))
        assert not (info.state.subjects or {}).get(log_subject(job_id))
    finally:
        await nc.close()


def test_an_expired_live_log_comes_from_the_archive(default_cluster: LocalCluster) -> None:
    gw = default_cluster.gateway_url
    user = new_user(gw)
    h = user["headers"]
    job_id = httpx.post(
        f"{gw}/api/v1/jobs",
        json={"type": "script", "name": "arch", "params": {"script_content": "echo one; echo two"}},
        headers=h,
    ).json()["job_id"]
    wait_status(gw, h, job_id, "completed")
    url = f"{gw}/api/v1/jobs/{job_id}/logs"
    live = httpx.get(url, headers=h)
    assert live.status_code == 200 and live.text == "one\ntwo\n"
    assert "x-dante-log-source" not in live.headers
    assert httpx.get(url, params={"attempt": 1}, headers=h).text == "one\ntwo\n"
    sse = httpx.get(url, params={"follow": "true", "attempt": 1}, headers=h).text
    assert 'data: "one"' in sse and 'data: "two"' in sse and "event: end" in sse
    missing = httpx.get(url, params={"attempt": 2}, headers=h)
    assert missing.status_code == 404 and missing.json()["error"] == "attempt_not_found"

    asyncio.run(_expire_live_log(default_cluster, job_id))
    archived = httpx.get(url, headers=h)
    assert archived.status_code == 200
    assert archived.text == "one\ntwo\n"
    assert archived.headers["x-dante-log-source"] == "archive"
    assert httpx.get(url, params={"attempt": 1}, headers=h).text == "one\ntwo\n"
    # the console follows: the same events, from the archive
    followed = httpx.get(url, params={"follow": "true"}, headers=h)
    assert followed.headers["x-dante-log-source"] == "archive"
    assert 'data: "one"\n\n' in followed.text and 'data: "two"\n\n' in followed.text
    assert followed.text.endswith("event: end\ndata: {}\n\n")

    # without the archived object either: a 404 saying why, not an empty 200
    obj = f"{gw}/api/v1/storage/objects/{log_key(job_id, 1)}"
    assert httpx.delete(obj, headers=h).status_code == 204
    gone = httpx.get(url, headers=h)
    assert gone.status_code == 404
    assert gone.json()["error"] == "log_not_found"
    assert "no archived log" in gone.json()["detail"]
    gone = httpx.get(url, params={"follow": "true"}, headers=h)
    assert gone.status_code == 404 and gone.json()["error"] == "log_not_found"
