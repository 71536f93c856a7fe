from __future__ import annotations

from shared.errors import DanteError


class TooManyAttempts(DanteError):
    status_code = 429
    code = "too_many_attempts"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})
