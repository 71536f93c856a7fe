from __future__ import annotations

import uuid
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from api_gateway import logs
from api_gateway.proxy import Upstreams
from api_gateway.schemas import JobSubmission
from shared.app import correlation_id
from shared.auth import CurrentPrincipal, Principal, current_principal
from shared.contracts import JobSubmitted
from shared.db import utcnow
from shared.errors import Forbidden, NotFound, ServiceUnavailable
from shared.nats import publish

log = structlog.get_logger(__name__)
router = APIRouter()

# Reachable without a token: how one gets a token, the public keys, presigned object URLs.
PUBLIC_PREFIXES = (
    "/api/v1/auth/register",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/auth/token",
    "/.well-known/jwks.json",
    "/api/v1/storage/presigned/",
    "/api/v1/billing/stripe/webhook",  # Stripe signs it; billing verifies the signature
)

ROUTES = (
    ("/api/v1/auth", "auth"),
    ("/.well-known", "auth"),
    ("/api/v1/providers", "registry"),
    ("/api/v1/jobs", "scheduler"),
    ("/api/v1/usage", "scheduler"),
    ("/api/v1/storage", "storage"),
    ("/api/v1/billing", "billing"),
)


def upstreams(request: Request) -> Upstreams:
    return request.app.state.upstreams


UpstreamsDep = Annotated[Upstreams, Depends(upstreams)]


@router.post("/api/v1/jobs", status_code=202, tags=["jobs"])
async def submit_job(
    body: JobSubmission, principal: CurrentPrincipal, request: Request
) -> JSONResponse:
    """Validate and publish; the scheduler stores it (a read may 404 for a few ms)."""
    if principal.role not in ("requester", "admin"):
        raise Forbidden("only requesters submit jobs")
    job_id = str(uuid.uuid4())
    now = utcnow()
    cid = correlation_id(request)
    message = JobSubmitted(
        job_id=job_id,
        owner_id=principal.user_id,
        type=body.type,
        name=body.name,
        spec=body.normalized_spec(),
        submitted_at=now,
    )
    try:
        await publish(
            request.app.state.js, "jobs.submitted", message, msg_id=job_id, correlation_id=cid
        )
    except Exception as exc:
        log.error("job.publish_failed", error=str(exc))
        raise ServiceUnavailable("the job queue is unavailable; nothing was submitted") from exc
    log.info("job.submitted", job_id=job_id, type=body.type)
    return JSONResponse(
        {
            "job_id": job_id,
            "status": "queued",
            "timestamp": now.isoformat(),
            "message": "job accepted for scheduling",
        },
        status_code=202,
    )


async def _job_status(request: Request, job_id: str) -> str | None:
    """Ask the scheduler, with the caller's own token, whether the job exists and its state."""
    bases = await request.app.state.upstreams.candidates("scheduler")
    resp = await request.app.state.http.get(
        f"{bases[0]}/api/v1/jobs/{job_id}",
        headers={
            "authorization": request.headers.get("authorization", ""),
            "x-request-id": correlation_id(request),
        },
    )
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return resp.json()["status"]


@router.get("/api/v1/jobs/{job_id}/logs", tags=["jobs"], response_model=None)
async def job_logs(
    job_id: str, principal: CurrentPrincipal, request: Request, follow: bool = False
) -> Response:
    status = await _job_status(request, job_id)
    if status is None:
        raise NotFound("job not found")
    js = request.app.state.js
    if not follow:
        return PlainTextResponse(await logs.read_all(js, job_id))

    async def current() -> str | None:
        return await _job_status(request, job_id)

    return StreamingResponse(
        logs.follow(js, job_id, current),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def _authenticate(request: Request) -> Principal | None:
    path = request.url.path
    if any(path.startswith(p) for p in PUBLIC_PREFIXES):
        return None
    return await current_principal(request)


@router.api_route(
    "/{path:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
    include_in_schema=False,
)
async def proxy(path: str, request: Request, ups: UpstreamsDep) -> StreamingResponse:
    full = "/" + path
    service = next(
        (svc for prefix, svc in ROUTES if full == prefix or full.startswith(prefix + "/")), None
    )
    if service is None:
        raise NotFound(f"no route for {full}")
    await _authenticate(request)
    return await ups.forward(request, service, correlation_id(request))
