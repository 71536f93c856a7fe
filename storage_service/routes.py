"""HTTP only: parse, call the service, shape the answer."""

from __future__ import annotations

import re
from email.utils import format_datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.convertors import Convertor, register_url_convertor

from shared.auth import AdminPrincipal, CurrentPrincipal
from shared.errors import BadRequest
from shared.openapi import errors
from storage_service.backends import ObjectInfo
from storage_service.schemas import (
    BucketIn,
    BucketOut,
    ObjectListOut,
    ObjectOut,
    PresignBatchIn,
    PresignBatchOut,
    PresignIn,
    PresignOut,
)
from storage_service.service import Download, Scope, StorageService
from storage_service.state import StorageState
from storage_service.streams import ExpectedChecksums


class _KeyConvertor(Convertor[str]):
    """Starlette's ``path`` is ``.*`` under ``^…$``: it stops at a newline, and ``$`` matches
    before a trailing one, so ``a%0A`` would address ``a``. Take every character instead and
    let the key rules refuse what they refuse."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("objkey", _KeyConvertor())

router = APIRouter(prefix="/api/v1/storage", tags=["storage"])
presigned_router = APIRouter(prefix="/api/v1/storage/presigned", tags=["storage"])

_CONTENT_TYPE_RE = re.compile(r"^[\w.+-]+/[\w.+-]+(\s*;\s*[\w.+-]+=(\"[^\"\\\r\n]*\"|[\w.+-]+))*$")
# Objects are user content: never let a browser sniff or run them from our origin.
_SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


def _service(state: StorageState) -> StorageService:
    return state.storage


Service = Annotated[StorageService, Depends(_service)]


def _scope(
    principal: CurrentPrincipal,
    service: Service,
    bucket: Annotated[str | None, Query(description="bucket; the default bucket if absent")] = None,
    owner: Annotated[
        str | None, Query(description="admin only: a user id, or * for the whole bucket")
    ] = None,
) -> Scope:
    return service.scope(principal, bucket, owner)


ObjectScope = Annotated[Scope, Depends(_scope)]


def _content_type(request: Request) -> str | None:
    value = request.headers.get("content-type")
    if value is None:
        return None
    value = value.strip()
    if len(value) > 255 or not _CONTENT_TYPE_RE.match(value):
        raise BadRequest("Content-Type is not a valid media type")
    return value


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequest("Content-Length is not a number")
    return int(value)


def _object_headers(info: ObjectInfo) -> dict[str, str]:
    return {
        "ETag": f'"{info.etag}"',
        "Last-Modified": format_datetime(info.last_modified, usegmt=True),
        "Accept-Ranges": "bytes",
        **_SAFE_HEADERS,
    }


def _download_response(download: Download) -> StreamingResponse:
    info = download.info
    headers = _object_headers(info)
    headers["Content-Length"] = str(download.length)
    status = 200
    if download.range:
        status = 206
        headers["Content-Range"] = f"bytes {download.range[0]}-{download.range[1]}/{info.size}"
    return StreamingResponse(
        download.body, status_code=status, headers=headers, media_type=info.content_type
    )


# --- objects ----------------------------------------------------------------------------------


@router.put("/objects/{key:objkey}", status_code=201, response_model=ObjectOut)
async def put_object(key: str, request: Request, scope: ObjectScope, service: Service) -> ObjectOut:
    """Streamed upload: the body goes to the backend as it arrives, never whole in memory."""
    return await service.put_object(
        scope,
        key,
        request.stream(),
        content_type=_content_type(request),
        content_length=_content_length(request),
        checksums=ExpectedChecksums.from_headers(request.headers),
    )


_BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
OBJECT_BYTES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the object's bytes", "content": _BYTES},
    206: {"description": "the byte range a Range header asked for", "content": _BYTES},
}


@router.get(
    "/objects/{key:objkey}",
    response_class=StreamingResponse,
    responses=OBJECT_BYTES,
)
async def get_object(
    key: str, request: Request, scope: ObjectScope, service: Service
) -> StreamingResponse:
    return _download_response(await service.get_object(scope, key, request.headers.get("range")))


@router.head(
    "/objects/{key:objkey}",
    response_class=Response,
    responses={200: {"description": "the object's headers (size, type, etag), no body"}},
)
async def head_object(key: str, scope: ObjectScope, service: Service) -> Response:
    info = await service.head_object(scope, key)
    headers = _object_headers(info)
    headers["Content-Length"] = str(info.size)
    headers["Content-Type"] = info.content_type
    return Response(status_code=200, headers=headers)


@router.delete("/objects/{key:objkey}", status_code=204)
async def delete_object(key: str, scope: ObjectScope, service: Service) -> Response:
    await service.delete_object(scope, key)
    return Response(status_code=204)


@router.get("/objects", response_model=ObjectListOut)
async def list_objects(
    scope: ObjectScope,
    service: Service,
    prefix: str = "",
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ObjectListOut:
    return await service.list_objects(scope, prefix, cursor, limit)


# --- presigned URLs ---------------------------------------------------------------------------


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.post("/presign", response_model=PresignOut)
async def presign(
    body: PresignIn, request: Request, principal: CurrentPrincipal, service: Service
) -> PresignOut:
    scope = service.scope(principal, body.bucket, body.owner)
    return await service.presign(scope, body.key, body.method, body.expires_in, _base_url(request))


@router.post("/presign/batch", response_model=PresignBatchOut)
async def presign_batch(
    body: PresignBatchIn, request: Request, principal: CurrentPrincipal, service: Service
) -> PresignBatchOut:
    """Presign a job's declared inputs (GET) and outputs (PUT) in one call (the scheduler's)."""
    scope = service.scope(principal, body.bucket, body.owner)
    return await service.presign_job_io(
        scope, body.inputs, body.outputs, body.expires_in, _base_url(request)
    )


PRESIGNED_ERRORS = errors(403, 416)  # a signature that does not match or has expired


@presigned_router.get(
    "/{bucket}/{key:objkey}",
    response_class=StreamingResponse,
    responses={**OBJECT_BYTES, **PRESIGNED_ERRORS},
)
async def presigned_get(
    bucket: str,
    key: str,
    request: Request,
    service: Service,
    expires: str | None = None,
    signature: str | None = None,
) -> StreamingResponse:
    """No bearer token: the signature is the authorisation."""
    service.check_presigned("GET", bucket, key, expires, signature)
    return _download_response(
        await service.presigned_get(bucket, key, request.headers.get("range"))
    )


@presigned_router.put(
    "/{bucket}/{key:objkey}",
    response_class=Response,
    responses={
        200: {
            "description": "stored; the ETag header names the content",
            "content": {"text/plain": {"schema": {"type": "string", "maxLength": 0}}},
        },
        **PRESIGNED_ERRORS,
    },
)
async def presigned_put(
    bucket: str,
    key: str,
    request: Request,
    service: Service,
    expires: str | None = None,
    signature: str | None = None,
) -> Response:
    service.check_presigned("PUT", bucket, key, expires, signature)
    info = await service.presigned_put(
        bucket,
        key,
        request.stream(),
        content_type=_content_type(request),
        content_length=_content_length(request),
        checksums=ExpectedChecksums.from_headers(request.headers),
    )
    return Response(status_code=200, headers={"ETag": f'"{info.etag}"'}, media_type="text/plain")


# --- buckets (admin) --------------------------------------------------------------------------


@router.get("/buckets", response_model=list[BucketOut])
async def list_buckets(_: AdminPrincipal, service: Service) -> list[BucketOut]:
    return await service.list_buckets()


@router.post("/buckets", status_code=201, response_model=BucketOut)
async def create_bucket(body: BucketIn, _: AdminPrincipal, service: Service) -> BucketOut:
    return await service.create_bucket(body.name)


@router.delete("/buckets/{name}", status_code=204)
async def delete_bucket(name: str, _: AdminPrincipal, service: Service) -> Response:
    await service.delete_bucket(name)
    return Response(status_code=204)
