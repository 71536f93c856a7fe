from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from api_gateway import logs
from api_gateway.auth import is_public
from api_gateway.schemas import JobAccepted, JobSubmission
from api_gateway.state import GatewayState, State
from api_gateway.submit import IDEMPOTENCY_HEADER, job_id_for
from shared.app import correlation_id
from shared.auth import CurrentPrincipal, current_principal
from shared.contracts import JobSubmitted
from shared.db import utcnow
from shared.errors import Forbidden, NotFound

log = structlog.get_logger(__name__)
router = APIRouter()

ROUTES = (
    ("/api/v1/auth", "auth"),
    ("/.well-known", "auth"),
    ("/api/v1/providers", "registry"),
    ("/api/v1/jobs", "scheduler"),
    ("/api/v1/usage", "scheduler"),
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
    if principal.role not in ("requester", "admin"):
        raise Forbidden("only requesters submit jobs")
    job_id = job_id_for(principal.user_id, idempotency_key)
    now = utcnow()
    message = JobSubmitted(
        job_id=job_id,
        owner_id=principal.user_id,
        type=body.type,
        name=body.name,
        spec=body.to_spec(),
        submitted_at=now,
    )
    await state.submissions.submit(
        message, correlation_id(request), keyed=idempotency_key is not None
    )
    log.info("job.submitted", job_id=job_id, type=body.type, keyed=idempotency_key is not None)
    return JobAccepted(job_id=job_id, timestamp=now.isoformat())


async def _job_status(request: Request, state: State, job_id: str) -> str | None:
    """Ask the scheduler, with the caller's own token, whether the job exists and its state."""
    bases = await state.upstreams.candidates("scheduler")
    resp = await state.http.get(
        f"{bases[0]}/api/v1/jobs/{job_id}",
        headers={
            "authorization": request.headers.get("authorization", ""),
            "x-request-id": correlation_id(request),
        },
    )
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    status: str = resp.json()["status"]
    return status


LOG_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the log so far (text/plain), or with ?follow=true a live server-sent "
        "event stream that ends when the job does",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }
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
) -> Response:
    status = await _job_status(request, state, job_id)
    if status is None:
        raise NotFound("job not found")
    js = state.js
    if not follow:
        return PlainTextResponse(await logs.read_all(js, job_id))

    async def current() -> str | None:
        return await _job_status(request, state, job_id)

    return StreamingResponse(
        logs.follow(
            js, job_id, current, after=logs.parse_event_id(request.headers.get("last-event-id"))
        ),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


@router.api_route(
    "/{path:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
    include_in_schema=False,
)
async def proxy(path: str, request: Request, state: GatewayState) -> StreamingResponse:
    full = "/" + path
    service = next(
        (svc for prefix, svc in ROUTES if full == prefix or full.startswith(prefix + "/")), None
    )
    if service is None:
        raise NotFound(f"no route for {full}")
    if not is_public(full):
        await current_principal(request)  # resolved by the Authenticate middleware
    return await state.upstreams.forward(request, service, correlation_id(request))
