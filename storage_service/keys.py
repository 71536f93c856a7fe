"""Object keys and the per-user namespace they live in.

A client names objects relative to its namespace (``datasets/train.csv``); the stored key is
``users/<user_id>/datasets/train.csv``. A key is refused unless it is a plain relative path, so
no spelling of it can reach outside that prefix: both backends store exactly what passes here.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from storage_service.errors import InvalidBucketName, InvalidKey

# S3 allows 1,024 bytes; the namespace prefix takes up to ~80 of them. Segments are capped so
# the local backend can store each one as a file name (255 bytes, less its 2-byte suffix).
MAX_KEY_BYTES = 900
MAX_SEGMENT_BYTES = 250
USERS_PREFIX = "users/"
ALL_NAMESPACES = "*"

# Control, format (zero-width, bidi overrides), surrogate, private-use, unassigned, separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# '%' is refused outright: a key never needs it, and a decoded-twice "%2e%2e" is a traversal.
_REFUSED_CHARS = frozenset("\\%")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_OWNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _check_segments(text: str, *, what: str, allow_trailing_slash: bool) -> None:
    segments = text.split("/")
    if allow_trailing_slash and segments[-1] == "":
        segments = segments[:-1]
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidKey(f"{what} must be a relative path without empty, '.' or '..' parts")
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise InvalidKey(f"each part of a {what} is at most {MAX_SEGMENT_BYTES} bytes")


def validate_key(key: str, *, prefix: bool = False) -> str:
    """Return ``key`` if it is a safe relative object key (or, with ``prefix``, a list prefix)."""
    what = "prefix" if prefix else "key"
    if prefix and key == "":
        return key
    if not key:
        raise InvalidKey("key must not be empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"{what} is longer than {MAX_KEY_BYTES} bytes")
    for ch in key:
        if ch in _REFUSED_CHARS or unicodedata.category(ch) in _REFUSED_CATEGORIES:
            raise InvalidKey(f"{what} contains a refused character U+{ord(ch):04X}")
    if key.startswith("/"):
        raise InvalidKey(f"{what} must be relative")
    # One spelling per name: NFD and NFC forms of "é" would otherwise be two different objects.
    if unicodedata.normalize("NFC", key) != key:
        raise InvalidKey(f"{what} must be in Unicode NFC form")
    _check_segments(key, what=what, allow_trailing_slash=prefix)
    # Compatibility forms that fold into dots or separators (U+FF0E, U+2025, U+FF0F) are refused,
    # so a tool that normalises with NFKC downstream cannot turn a key into a traversal.
    folded = unicodedata.normalize("NFKC", key)
    if folded != key:
        if folded.count("/") != key.count("/") or any(c in folded for c in "\\%"):
            raise InvalidKey(f"{what} folds into a different path under Unicode normalisation")
        _check_segments(folded, what=what, allow_trailing_slash=prefix)
    return key


def validate_bucket(name: str) -> str:
    """S3's bucket naming rules, applied to both backends so a name works on either."""
    if not _BUCKET_RE.match(name) or ".." in name or re.match(r"^\d+\.\d+\.\d+\.\d+$", name):
        raise InvalidBucketName("bucket names are 3-63 of a-z, 0-9, '.', '-' (S3 rules)")
    return name


def validate_owner(owner: str) -> str:
    if not _OWNER_RE.match(owner) or ".." in owner:
        raise InvalidKey("owner must be a user id")
    return owner


@dataclass(frozen=True)
class Namespace:
    """Where a request's keys live: one user's prefix, or (admin only) the whole bucket."""

    owner: str  # a user id, or ALL_NAMESPACES

    @classmethod
    def of_user(cls, user_id: str) -> Namespace:
        return cls(validate_owner(user_id))

    @property
    def prefix(self) -> str:
        return "" if self.owner == ALL_NAMESPACES else f"{USERS_PREFIX}{self.owner}/"

    def full_key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def full_prefix(self, prefix: str) -> str:
        return self.prefix + validate_key(prefix, prefix=True)

    def relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) :]
