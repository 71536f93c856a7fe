"""HMAC-signed URLs this service serves itself (local disk, or S3 when ``presign_via=service``).

The signature covers method, bucket, full key and expiry, so a URL grants exactly one
operation on one object until it expires; changing any of them (another user's key, PUT for
GET, a later expiry) breaks it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import quote, urlencode

from storage_service.errors import PresignExpired, PresignRefused

PRESIGNED_PATH = "/api/v1/storage/presigned"


class PresignSigner:
    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def _signature(self, method: str, bucket: str, key: str, expires: int) -> str:
        message = f"dante-presign-v1\n{method}\n{bucket}\n{key}\n{expires}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def url(self, base_url: str, method: str, bucket: str, key: str, expires: int) -> str:
        query = urlencode(
            {"expires": expires, "signature": self._signature(method, bucket, key, expires)}
        )
        return f"{base_url.rstrip('/')}{PRESIGNED_PATH}/{bucket}/{quote(key, safe='/')}?{query}"

    def verify(
        self, method: str, bucket: str, key: str, expires: str | None, signature: str | None
    ) -> None:
        if not expires or not signature or not expires.isdigit():
            raise PresignRefused("presigned URL is missing its expiry or signature")
        want = self._signature(method, bucket, key, int(expires))
        if not hmac.compare_digest(want.encode(), signature.encode()):
            raise PresignRefused("presigned URL signature does not match")
        # Checked after the signature, so the answer says nothing about a forged URL's expiry.
        if int(expires) < time.time():
            raise PresignExpired("presigned URL has expired")
