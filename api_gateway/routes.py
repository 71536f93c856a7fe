from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import httpx
import structlog
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel

from api_gateway import logs
from api_gateway.auth import is_public
from api_gateway.schemas import JobAccepted, JobSubmission
from api_gateway.state import GatewayState, State
from api_gateway.submit import IDEMPOTENCY_HEADER, job_id_for
from shared.app import correlation_id
from shared.auth import CurrentPrincipal, Principal, current_principal
from shared.contracts import TERMINAL_STATES, JobSubmitted
from shared.db import utcnow
from shared.errors import Forbidden, NotFound, ServiceUnavailable

log = structlog.get_logger(__name__)
router = APIRouter()

SUBMITTER_ROLES = ("requester", "admin")

ROUTES = (
    ("/api/v1/auth", "auth"),
    ("/.well-known", "auth"),
    ("/api/v1/providers", "registry"),
    ("/api/v1/jobs", "scheduler"),
    ("/api/v1/usage", "scheduler"),
    ("/api/v1/scheduler", "scheduler"),  # policies and cordons (issue 17)
    ("/api/v1/storage", "storage"),
    ("/api/v1/billing", "billing"),
)


@router.post(
    "/api/v1/jobs",
    status_code=202,
    tags=["jobs"],
    responses={
        503: {
            "description": "``service_unavailable``: nothing was submitted. "
            "``submission_unknown``: the queue did not confirm; retry with the same "
            "Idempotency-Key (the job id is in the detail and the Dante-Job-Id header)."
        }
    },
)
async def submit_job(
    body: JobSubmission,
    principal: CurrentPrincipal,
    request: Request,
    state: GatewayState,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=IDEMPOTENCY_HEADER,
            description="Names this submission for its retries: the same key (per user) "
            "answers the same job id and never makes a second job.",
        ),
    ] = None,
) -> JobAccepted:
    """Validate and publish; the scheduler stores it (a read may 404 for a few ms)."""
    return await accept_job(body, principal, state, correlation_id(request), idempotency_key)


async def accept_job(
    body: JobSubmission,
    principal: Principal,
    state: State,
    correlation: str,
    idempotency_key: str | None,
) -> JobAccepted:
    """The submission itself, for the route and for its fast lane (api_gateway/fastlane.py):
    answered only once JetStream has acknowledged the message."""
    if principal.role not in SUBMITTER_ROLES:
        raise Forbidden("only requesters submit jobs")
    job_id = job_id_for(principal.user_id, idempotency_key)
    now = utcnow()
    # every field is validated already (the body, our own id, owner and clock): constructed,
    # not validated again, which cost a fifth of the gateway's CPU per submission (issue 12)
    message = JobSubmitted.model_construct(
        job_id=job_id,
        owner_id=principal.user_id,
        type=body.type,
        name=body.name,
        spec=body.to_spec(),
        submitted_at=now,
    )
    await state.submissions.submit(message, correlation, keyed=idempotency_key is not None)
    log.info("job.submitted", job_id=job_id, type=body.type, keyed=idempotency_key is not None)
    return JobAccepted(job_id=job_id, timestamp=now.isoformat())


class JobView(BaseModel):
    """What the gateway needs of the scheduler's job to serve its log."""

    status: str
    owner_id: str
    attempt: int


async def _job(request: Request, state: State, job_id: str) -> JobView | None:
    """Ask the scheduler, with the caller's own token, whether the job exists and its state."""
    bases = await state.upstreams.candidates("scheduler")
    resp = await state.http.get(
        f"{bases[0]}/api/v1/jobs/{quote(job_id, safe='')}",
        headers={
            "authorization": request.headers.get("authorization", ""),
            "x-request-id": correlation_id(request),
        },
    )
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return JobView.model_validate_json(resp.content)


async def _job_status(request: Request, state: State, job_id: str) -> str | None:
    job = await _job(request, state, job_id)
    return job.status if job else None


LOG_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the log so far (text/plain), or with ?follow=true a live server-sent "
        "event stream that ends when the job does",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    },
    404: {
        "description": "no such job, or an ended job whose live log expired and which has no "
        "archived log (`log_not_found`, the detail says why)",
    },
}


@router.get(
    "/api/v1/jobs/{job_id}/logs",
    tags=["jobs"],
    response_model=None,
    response_class=PlainTextResponse,
    responses=LOG_RESPONSES,
)
async def job_logs(
    job_id: str,
    principal: CurrentPrincipal,
    request: Request,
    state: GatewayState,
    follow: bool = False,
    attempt: int | None = Query(
        None,
        ge=1,
        le=1_000_000,
        description="only this attempt's lines (default: all, "
        "each later attempt after a `=== attempt N ===` line)",
    ),
) -> Response:
    job = await _job(request, state, job_id)
    if job is None:
        raise NotFound("job not found")
    if attempt is not None and attempt > job.attempt:
        raise NotFound(
            f"the job has no attempt {attempt} (it is at attempt {job.attempt})",
            code="attempt_not_found",
        )
    js = state.js
    if not follow:
        return await _log_so_far(request, state, principal.user_id, job_id, job, attempt)
    if job.status in TERMINAL_STATES and not await logs.live_chunks(js, job_id):
        # nothing live to follow any more: the archived log, as the same events
        urls = await _archived(request, state, principal.user_id, job_id, job, attempt)
        if not urls:
            raise _no_log()
        return StreamingResponse(
            logs.archive_events(state.http, urls, _forwarded(request)),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-dante-log-source": "archive"},
        )

    async def current() -> str | None:
        return await _job_status(request, state, job_id)

    return StreamingResponse(
        logs.follow(
            js,
            job_id,
            current,
            after=logs.parse_event_id(request.headers.get("last-event-id")),
            attempt=attempt,
        ),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def _log_so_far(
    request: Request,
    state: State,
    caller: str,
    job_id: str,
    job: JobView,
    attempt: int | None,
) -> Response:
    """The live log while the LOGS stream holds all of it; once it has expired (a day) or
    was cut (the per-job bounds, docs/nats.md), the archived attempt logs of an ended job."""
    live = await logs.read_all(state.js, job_id, attempt)
    ended = job.status in TERMINAL_STATES
    if live.chunks and (live.complete or not ended):
        return PlainTextResponse(live.text)
    urls = await _archived(request, state, caller, job_id, job, attempt)
    if urls:
        return StreamingResponse(
            logs.stream_objects(state.http, urls, _forwarded(request)),
            media_type="text/plain; charset=utf-8",
            headers={"x-dante-log-source": "archive"},
        )
    if live.chunks or not ended:
        return PlainTextResponse(live.text)  # a job still running may not have printed yet
    raise _no_log()


def _forwarded(request: Request) -> dict[str, str]:
    return {
        "authorization": request.headers.get("authorization", ""),
        "x-request-id": correlation_id(request),
    }


def _no_log() -> NotFound:
    return NotFound(
        "the job has ended, its live log is no longer kept (the LOGS stream holds a day, "
        "bounded per job) and no archived log exists: the job never ran, or its daemon "
        "could not upload the log",
        code="log_not_found",
    )


async def _archived(
    request: Request, state: State, caller: str, job_id: str, job: JobView, attempt: int | None
) -> list[str]:
    """The URLs of the job's archived attempt logs that exist (all attempts, or one)."""
    storage = (await state.upstreams.candidates("storage"))[0]
    wanted = [attempt] if attempt else list(range(1, job.attempt + 1))
    owner = job.owner_id if job.owner_id != caller else None
    try:
        return await logs.archived(state.http, storage, job_id, wanted, owner, _forwarded(request))
    except httpx.HTTPError as exc:
        log.warning("logs.archive_unavailable", job_id=job_id, error=str(exc))
        raise ServiceUnavailable(
            "the job's live log is gone and storage, which holds its archived log, did not "
            "answer; try again shortly",
            headers={"Retry-After": "5"},
        ) from exc


@router.api_route(
    "/{path:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
    include_in_schema=False,
)
async def proxy(path: str, request: Request, state: GatewayState) -> Response:
    full = "/" + path
    service = service_for(full)
    if service is None:
        raise NotFound(f"no route for {full}")
    return await proxy_to(service, full, request, state)


def service_for(path: str) -> str | None:
    """The service that serves ``path`` (``ROUTES``), None if none does."""
    return next(
        (svc for prefix, svc in ROUTES if path == prefix or path.startswith(prefix + "/")), None
    )


async def proxy_to(service: str, path: str, request: Request, state: State) -> Response:
    """Forward to ``service`` on the caller's behalf: for the route and its fast lane."""
    if not is_public(path):
        await current_principal(request)  # resolved by the Authenticate middleware
    return await state.upstreams.forward(request, service, correlation_id(request))
