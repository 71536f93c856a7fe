"""Pieces of uploads and downloads shared by the sync and async clients."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from dante_client.errors import DanteError

CHUNK = 1 << 20  # 1 MiB per read/write: memory stays flat whatever the file's size

Progress = Callable[[int, int], None]
"""``progress(bytes_done, bytes_total)``; called again from 0 if a transfer restarts."""

# What a job spec may carry when submitted again (the gateway refuses unknown fields).
SPEC_FIELDS = (
    "type",
    "name",
    "description",
    "params",
    "resources",
    "priority",
    "tags",
    "timeout_seconds",
    "grace_seconds",
    "max_retries",
    "max_price_per_hour",
    "labels",
    "env",
    "inputs",
    "outputs",
)


def file_chunks(path: Path, progress: Progress | None, size: int) -> Iterator[bytes]:
    done = 0
    if progress:
        progress(0, size)
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            done += len(chunk)
            yield chunk
            if progress:
                progress(done, size)


def part_path(dst: Path, etag: str) -> Path:
    """Where a download accumulates; named after the object's version, so a part of an older
    version is never continued with bytes of a newer one."""
    tag = hashlib.sha256(etag.encode()).hexdigest()[:12]
    return dst.with_name(f".{dst.name}.{tag}.part")


def check_range(status: int, headers: httpx.Headers, have: int) -> bool:
    """True if the answer continues at ``have`` (206 from there); False: a whole body."""
    if have == 0 or status != 206:
        return False
    start = headers.get("content-range", "").removeprefix("bytes ").split("-", 1)[0]
    if start != str(have):
        raise DanteError(f"the server resumed at byte {start}, not {have}")
    return True


def resume_point(part: Path, size: int) -> int:
    """How many bytes of the object ``part`` already holds (a part that is longer than the
    object is not a prefix of it: it is dropped and the download starts over)."""
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    return have


def range_from(have: int) -> dict[str, str]:
    """The request headers that continue a download after ``have`` bytes."""
    return {"range": f"bytes={have}-"} if have else {}


def finish_download(part: Path, dst: Path, size: int) -> Path:
    got = part.stat().st_size
    if got != size:
        raise DanteError(f"download incomplete: {got} of {size} bytes")
    dst.parent.mkdir(parents=True, exist_ok=True)
    part.replace(dst)
    return dst


def rerun_spec(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: spec[k] for k in SPEC_FIELDS if spec.get(k) is not None}
