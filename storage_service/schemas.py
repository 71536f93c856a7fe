from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class ObjectOut(BaseModel):
    key: str  # relative to the namespace asked for (the full key when owner is "*")
    bucket: str
    owner: str
    size: int
    etag: str
    last_modified: datetime
    content_type: str | None = None


class ObjectListOut(BaseModel):
    bucket: str
    owner: str
    prefix: str
    objects: list[ObjectOut]
    next_cursor: str | None = None


class PresignIn(BaseModel):
    key: str
    method: Literal["GET", "PUT"] = "GET"
    expires_in: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    bucket: str | None = None
    owner: str | None = None


class PresignOut(BaseModel):
    url: str
    method: Literal["GET", "PUT"]
    key: str
    bucket: str
    expires_at: datetime


class PresignBatchIn(BaseModel):
    """A job's declared inputs (read) and outputs (written), presigned for its daemon."""

    inputs: list[str] = Field(default_factory=list, max_length=1000)
    outputs: list[str] = Field(default_factory=list, max_length=1000)
    expires_in: int = Field(default=6 * 3600, ge=1, le=7 * 24 * 3600)
    bucket: str | None = None
    owner: str | None = None


class PresignBatchOut(BaseModel):
    bucket: str
    owner: str
    expires_at: datetime
    inputs: dict[str, str]
    outputs: dict[str, str]


class BucketIn(BaseModel):
    name: str


class BucketOut(BaseModel):
    name: str
    created_at: datetime | None = None
    default: bool = False
