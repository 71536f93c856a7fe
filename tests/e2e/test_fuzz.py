"""No input makes any service answer 5xx, and every answer is the one its OpenAPI declares.

Schemathesis generates requests from the documents themselves (the gateway's merged
``/openapi.json``, and each service's own), valid and invalid ones alike, and sends them to the
real processes of the shared cluster as each role and without a token. Every answer must be
below 500, a status the operation declares, and in the declared schema (errors included:
``shared/openapi.py``). Examples are derandomized and bounded (``EXAMPLES`` per target), so a
run is repeatable and takes well under a minute; a failure prints the case to reproduce it.

Besides the generated cases, the inputs that once answered 5xx or lost a job (issue 11) are
sent by hand: integers beyond 64 bits, NUL and control characters, lone surrogates and
non-characters, in path, query and body.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from auth_service.settings import DEV_ADMIN_PASSWORD
from localdev.cluster import LocalCluster
from tests.support.accounts import new_user, provider_key
from tests.support.wait import eventually

pytestmark = pytest.mark.e2e

EXAMPLES = {"gateway": 100, "auth": 40, "registry": 30, "scheduler": 30, "storage": 30,
            "billing": 30}  # fmt: skip
ROLES = ("none", "requester", "provider", "admin")
# A 503 is "unavailable", never input-caused, only for these: the deployment lacks a part.
UNCONFIGURED = {"payments_not_configured"}


def no_server_error(ctx: Any, response: Any, case: Any) -> bool:
    """No 5xx, except a 503 saying what this deployment is not set up for."""
    if response.status_code >= 500:
        body = response.json() if response.content else {}
        if response.status_code == 503 and body.get("error") in UNCONFIGURED:
            return True
        raise AssertionError(f"{response.status_code} from {case.operation.label}: {body}")
    return True


CHECKS = [
    no_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Operations that end the fuzzing actor's own session: covered by tests/auth, not fuzzed.
SKIPPED = {("POST", "/api/v1/auth/logout"), ("POST", "/api/v1/auth/password")}
INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1


@dataclass
class Run:
    """What one target's fuzzing saw (printed; the counts prove the run did something)."""

    cases: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    jobs_accepted: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture(scope="module")
def cluster(default_cluster: LocalCluster) -> LocalCluster:
    return default_cluster


@pytest.fixture(scope="module")
def roles(cluster: LocalCluster) -> Iterator[dict[str, dict[str, str]]]:
    """A token per role. The provider is an account of its own, not the cluster's daemon: the
    fuzzer re-registers "its" provider with random hardware, which must not be the one every
    other test's jobs run on. Its registration is deleted afterwards."""
    gw = cluster.gateway_url
    admin = httpx.post(
        f"{gw}/api/v1/auth/login", json={"username": "admin", "password": DEV_ADMIN_PASSWORD}
    )
    assert admin.status_code == 200, admin.text
    key = provider_key(gw)
    token = httpx.post(f"{gw}/api/v1/auth/token", json={"api_key": key["api_key"]})
    assert token.status_code == 200, token.text
    provider = {"authorization": f"Bearer {token.json()['access_token']}"}
    yield {
        "none": {},
        "requester": new_user(gw)["headers"],
        "provider": provider,  # with its provider id, as the registry's routes need
        "admin": {"authorization": f"Bearer {admin.json()['access_token']}"},
    }
    r = httpx.delete(f"{gw}/api/v1/providers/{key['provider_id']}", headers=provider)
    assert r.status_code in (204, 404), r.text


def _targets(cluster: LocalCluster) -> Iterator[tuple[str, str]]:
    yield "gateway", cluster.gateway_url
    for name in ("auth", "registry", "scheduler", "storage", "billing"):
        yield name, f"http://127.0.0.1:{cluster.ports[name]}"


def _not_a_header_case(case: Any) -> bool:
    data = case.meta.phase.data if case.meta is not None else None
    return getattr(data, "parameter_location", None) != ParameterLocation.HEADER


@pytest.mark.parametrize("target", list(EXAMPLES))
def test_no_input_answers_5xx_or_off_schema(
    cluster: LocalCluster, roles: dict[str, dict[str, str]], target: str
) -> None:
    base = dict(_targets(cluster))[target]
    document = httpx.get(f"{base}/openapi.json", timeout=120).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [
        op
        for result in schema.get_all_operations()
        if (op := result.ok()).path not in ("/health", "/ready")
        and (op.method.upper(), op.path) not in SKIPPED
    ]
    assert len(operations) >= 5
    strategies = [
        *(op.as_strategy() for op in operations),
        # invalid path, query and body; a negative *header* case drops the role's token
        *(
            op.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE).filter(
                _not_a_header_case
            )
            for op in operations
        ),
    ]
    session = requests.Session()
    run = Run()
    started = time.monotonic()

    @settings(
        max_examples=EXAMPLES[target],
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[p for p in settings.default.phases if p.name != "shrink"],
    )
    @given(case=st.one_of(strategies), role=st.sampled_from(ROLES))
    def fuzz(case: Any, role: str) -> None:
        headers = dict(roles[role])
        response = case.call(base_url=base, session=session, headers=headers, timeout=30)
        run.cases += 1
        run.statuses[response.status_code] = run.statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS, headers=headers)
        if (
            case.method.upper() == "POST"
            and case.operation.path == "/api/v1/jobs"
            and response.status_code == 202
        ):
            run.jobs_accepted.append((response.json()["job_id"], role))

    fuzz()
    print(
        f"\nfuzz {target}: {run.cases} cases, {len(operations)} operations, "
        f"{time.monotonic() - started:.1f} s, statuses {dict(sorted(run.statuses.items()))}, "
        f"jobs accepted {len(run.jobs_accepted)}"
    )
    assert run.cases >= EXAMPLES[target] // 2
    assert any(400 <= s < 500 for s in run.statuses)  # invalid input was in fact sent
    _every_accepted_job_is_stored(cluster.gateway_url, roles, run.jobs_accepted)


def _every_accepted_job_is_stored(
    gw: str, roles: dict[str, dict[str, str]], accepted: list[tuple[str, str]]
) -> None:
    """A 202 means stored: each accepted job is readable (then cancelled: nothing runs)."""
    for job_id, role in accepted:
        headers = roles[role]
        eventually(
            lambda job_id=job_id, headers=headers: (
                httpx.get(f"{gw}/api/v1/jobs/{job_id}", headers=headers).status_code == 200
            ),
            limit=10,
            what=f"accepted job {job_id} stored",
        )
        httpx.post(f"{gw}/api/v1/jobs/{job_id}/cancel", headers=headers)


# --- inputs that once answered 5xx or lost a job (issue 11) ----------------------------------

BIG = [2**63, 2**64, 10**30, -(2**63) - 1]
BAD_TEXT = ["a\x00b", "a\x07b", "a\ud800b", "a\uffffb", "a\ufffeb", "a\U0010ffffb"]
# one-line fields (names, tags, label keys) refuse a line break too
ONE_LINE_BAD = [*BAD_TEXT, "a\nb", "a\r\nb"]


def _raw_json(value: Any) -> bytes:
    """JSON text as a client could send it: lone surrogates escaped (``\\ud800``)."""
    return json.dumps(value, ensure_ascii=True).encode()


def _job(**fields: Any) -> dict[str, Any]:
    return {"type": "script", "name": "edge", "params": {"script_content": "true"}, **fields}


def test_out_of_range_integers_are_refused_in_query_and_body(
    cluster: LocalCluster, roles: dict[str, dict[str, str]]
) -> None:
    gw, admin, provider = cluster.gateway_url, roles["admin"], roles["provider"]
    registry = f"http://127.0.0.1:{cluster.ports['registry']}"
    for big in BIG:
        for base in (gw, registry):
            for query in (f"offset={big}", f"limit={big}", f"min_vram={big}"):
                r = httpx.get(f"{base}/api/v1/providers?{query}", headers=admin)
                assert r.status_code == 422, (base, query, r.text)
        r = httpx.get(f"{gw}/api/v1/auth/users?offset={big}", headers=admin)
        assert r.status_code == 422, r.text
        gpu = {"index": 0, "name": "G", "memory_total_mb": big}
        body = {"name": "edge", "gpus": [gpu]}
        r = httpx.post(f"{gw}/api/v1/providers", json=body, headers=provider)
        assert r.status_code == 422, r.text


def test_bad_characters_are_refused_in_path_query_and_body(
    cluster: LocalCluster, roles: dict[str, dict[str, str]]
) -> None:
    gw, requester, provider = cluster.gateway_url, roles["requester"], roles["provider"]
    scheduler = f"http://127.0.0.1:{cluster.ports['scheduler']}"
    for escaped in ("%00", "%0A", "%0D%0Ax", "%FF", "%ED%A0%80", "%EF%BF%BF"):
        for base, path in (
            (gw, f"/api/v1/jobs/{escaped}/logs"),
            (gw, f"/api/v1/jobs/{escaped}"),
            (scheduler, f"/api/v1/jobs/{escaped}"),
        ):
            r = httpx.get(f"{base}{path}", headers=requester)
            assert r.status_code == 422, (path, r.status_code, r.text)
            assert r.json()["error"] == "validation_error"

    def post(path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(
            f"{gw}{path}",
            content=_raw_json(body),
            headers={**headers, "content-type": "application/json"},
        )

    for text in ONE_LINE_BAD:
        quoted = "".join(f"%{b:02X}" for b in text.encode("utf-8", "surrogatepass"))
        r = httpx.get(f"{gw}/api/v1/jobs?tag={quoted}", headers=requester)
        assert r.status_code == 422, (text, r.text)
        for path, body, headers in (
            ("/api/v1/jobs", _job(labels={text: "v"}), requester),
            ("/api/v1/jobs", _job(name=text, tags=["t"]), requester),
            ("/api/v1/jobs", _job(tags=[text]), requester),
            ("/api/v1/providers", {"name": text}, provider),
            ("/api/v1/providers", {"name": "p", "labels": {text: "v"}}, provider),
        ):
            r = post(path, body, headers)
            assert r.status_code == 422, (body, r.status_code, r.text)
    gpu = {"index": 0, "name": "a\nb", "memory_total_mb": 1}
    r = post("/api/v1/providers", {"name": "p", "gpus": [gpu]}, provider)
    assert r.status_code == 422, r.text
    for text in BAD_TEXT:  # anywhere in a body, even where a line break is fine
        r = post("/api/v1/jobs", _job(params={"script_content": f"echo {text}"}), requester)
        assert r.status_code == 422, (text, r.status_code, r.text)
    for body in (_job(labels={"k": "\x00"}), _job(env={"K": "\ud800"}), _job(description="\uffff")):
        r = post("/api/v1/jobs", body, requester)
        assert r.status_code == 422, (body, r.status_code, r.text)
    r = post("/api/v1/providers", {"name": "p", "labels": {"k": "\ufffe"}}, provider)
    assert r.status_code == 422, r.text
    # object bytes are the user's, whatever their type: stored as sent
    content = b'{"n": 1e400, "s": "\\ud800\\u0000", "i": 99999999999999999999999}'
    r = httpx.put(
        f"{gw}/api/v1/storage/objects/fuzz/odd.json",
        content=content,
        headers={**requester, "content-type": "application/json"},
    )
    assert r.status_code == 201, r.text
    r = httpx.get(f"{gw}/api/v1/storage/objects/fuzz/odd.json", headers=requester)
    assert r.status_code == 200 and r.content == content
    # a line break where text is free: accepted (and stored)
    r = post("/api/v1/jobs", _job(params={"script_content": "echo a\n\techo b\r\n"}), requester)
    assert r.status_code == 202, r.text
    _every_accepted_job_is_stored(gw, roles, [(r.json()["job_id"], "requester")])


def test_provider_gpu_edge_cases_are_4xx(
    cluster: LocalCluster, roles: dict[str, dict[str, str]]
) -> None:
    gw, provider = cluster.gateway_url, roles["provider"]
    twins = {"name": "twins", "gpus": [{"index": 0, "name": "A"}, {"index": 0, "name": "B"}]}
    r = httpx.post(f"{gw}/api/v1/providers", json=twins, headers=provider)
    assert r.status_code == 422, r.text
    null_metrics = {"name": "nm", "gpus": [{"index": 0, "name": "A", "metrics": None}]}
    r = httpx.post(f"{gw}/api/v1/providers", json=null_metrics, headers=provider)
    assert r.status_code < 500, r.text


def test_a_job_is_accepted_only_if_it_is_stored(
    cluster: LocalCluster, roles: dict[str, dict[str, str]]
) -> None:
    """Boundary values of every integer a job carries: each 202 is a stored job."""
    gw, requester = cluster.gateway_url, roles["requester"]
    # 0, the largest a column holds, one more, beyond 64 bits, far beyond, negative
    values = [0, INT32_MAX, INT32_MAX + 1, INT64_MAX, 2**63, 10**30, -1, -(2**63) - 1]
    bodies = []
    for v in values:
        bodies += [
            _job(resources={"min_vram_mb": v}),
            _job(min_vram_mb=v),
            _job(resources={"memory_mb": v}),
            _job(timeout_seconds=v),
            _job(priority=v),
        ]
    accepted, refused = [], 0
    for body in bodies:
        r = httpx.post(f"{gw}/api/v1/jobs", json=body, headers=requester)
        assert r.status_code in (202, 422), (body, r.status_code, r.text)
        if r.status_code == 202:
            accepted.append((r.json()["job_id"], "requester"))
        else:
            refused += 1
    assert accepted and refused  # both sides of the boundaries were exercised
    _every_accepted_job_is_stored(gw, roles, accepted)
