"""Password hashing and opaque secrets (refresh tokens, API keys)."""

from __future__ import annotations

import hashlib
import secrets

from passlib.context import CryptContext

_passwords = CryptContext(schemes=["argon2"], deprecated="auto")

# Verified against when the user does not exist, so a login takes the same time either way.
_DUMMY_HASH = _passwords.hash("not-a-real-password-" + secrets.token_hex(8))


def hash_password(password: str) -> str:
    return _passwords.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    if password_hash is None:
        _passwords.verify(password, _DUMMY_HASH)
        return False
    return _passwords.verify(password, password_hash)


def new_secret(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """Opaque secrets are long and random, so a plain SHA-256 is the right store (no salt)."""
    return hashlib.sha256(secret.encode()).hexdigest()
