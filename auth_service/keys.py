"""Signing keys: RSA keys on disk, the newest signs, every present key verifies.

Rotation without downtime: ``python -m auth_service rotate-key`` writes a new key; restarted
(or newly started) auth instances sign with it, while the old key stays in the JWKS so tokens it
signed keep verifying until they expire. Delete an old key file once ``access_ttl`` has passed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_pem: bytes
    public_jwk: dict[str, Any]


def _load(path: Path) -> SigningKey:
    private_pem = path.read_bytes()
    private = serialization.load_pem_private_key(private_pem, password=None)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public = jwk.construct(public_pem, "RS256").to_dict()
    kid = path.stem
    public.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return SigningKey(kid=kid, private_pem=private_pem, public_jwk=public)


def generate_key(key_dir: Path) -> Path:
    """Write a new 2048-bit RSA key named by its creation time (so names sort by age)."""
    key_dir.mkdir(parents=True, exist_ok=True)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = key_dir / f"k{time.time_ns():x}.pem"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    tmp.rename(path)
    return path


class KeyRing:
    def __init__(self, key_dir: Path, *, create: bool = True) -> None:
        paths = sorted(key_dir.glob("k*.pem")) if key_dir.exists() else []
        if not paths:
            if not create:
                raise RuntimeError(f"no signing key in {key_dir}")
            paths = [generate_key(key_dir)]
        self.keys = [_load(p) for p in paths]
        self.active = self.keys[-1]
        self._signer: tuple[SigningKey, Any] | None = None

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk for k in self.keys]}

    def sign(self, claims: dict[str, Any]) -> str:
        # the parsed key, kept: parsing the PEM costs more than the signature (issue 12)
        if self._signer is None or self._signer[0] is not self.active:
            self._signer = (self.active, jwk.construct(self.active.private_pem, "RS256"))
        return jwt.encode(
            claims,
            self._signer[1],  # jose takes a constructed Key as well as a PEM
            algorithm="RS256",
            headers={"kid": self.active.kid},
        )
