"""NATS decentralized auth without the ``nkeys`` package: NKEYs, JWTs and the bootstrap.

NKEYs are Ed25519 keys written as base32 of ``prefix byte(s) + key + CRC16 (little endian)``;
NATS JWTs are ``header.claims.signature`` with an ``ed25519-nkey`` signature by the issuer.
The server runs in operator mode with a memory resolver: one operator, one application account
(JetStream on), one system account. Users are issued by the account's signing key: services get
a full-permission user from setup, a provider daemon gets one limited to its own tasks from the
auth service (see docs/nats.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shared.contracts import (
    ANY,
    heartbeat_subject,
    log_subject,
    start_subject,
    status_subject,
    task_subject,
)

PREFIX_SEED = 18 << 3
PREFIX = {"operator": 14 << 3, "account": 0, "user": 20 << 3}
TASKS_STREAM = "TASKS"


def _crc16(data: bytes) -> int:
    """CRC-16/XMODEM, the checksum NKEYs carry."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw + _crc16(raw).to_bytes(2, "little")).decode().rstrip("=")


def _unb32(text: str) -> bytes:
    raw = base64.b32decode(text + "=" * (-len(text) % 8))
    body, crc = raw[:-2], int.from_bytes(raw[-2:], "little")
    if _crc16(body) != crc:
        raise ValueError("bad NKEY checksum")
    return body


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class KeyPair:
    kind: str  # operator, account or user
    private: Ed25519PrivateKey

    @classmethod
    def generate(cls, kind: str) -> KeyPair:
        return cls(kind, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: str) -> KeyPair:
        raw = _unb32(seed.strip())
        if raw[0] & 0xF8 != PREFIX_SEED:
            raise ValueError("not an NKEY seed")
        prefix = ((raw[0] & 0x07) << 5) | ((raw[1] & 0xF8) >> 3)
        kind = next(k for k, p in PREFIX.items() if p == prefix)
        return cls(kind, Ed25519PrivateKey.from_private_bytes(raw[2:34]))

    @property
    def public_key(self) -> str:
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return _b32(bytes([PREFIX[self.kind]]) + raw)

    @property
    def seed(self) -> str:
        prefix = PREFIX[self.kind]
        head = bytes([PREFIX_SEED | (prefix >> 5), (prefix & 31) << 3])
        return _b32(head + self.private.private_bytes_raw())

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    def sign_nonce(self, nonce: str) -> bytes:
        """What nats-py's ``signature_cb`` must return for the server's CONNECT nonce."""
        return base64.b64encode(self.sign(nonce.encode()))


def encode_jwt(issuer: KeyPair, subject: str, nats: dict[str, Any], **claims: Any) -> str:
    body: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public_key,
        "sub": subject,
        **claims,
        "nats": {**nats, "version": 2},
    }
    body["jti"] = (
        base64.b32encode(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest())
        .decode()
        .rstrip("=")
    )
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(body).encode())
    signature = issuer.sign(f"{head}.{payload}".encode())
    return f"{head}.{payload}.{_b64(signature)}"


def decode_jwt(token: str) -> dict[str, Any]:
    """The claims, unverified (the server verifies; we only read what we were given)."""
    return json.loads(_unb64(token.split(".")[1]))


def daemon_permissions(provider_id: str) -> dict[str, Any]:
    """What one provider daemon may do: its own durable consumer on TASKS, filtered to its own
    subject (the filter is part of the CREATE subject, so the body cannot widen it), acks for
    that consumer, status and log publishes, asking to start its own attempts, heartbeats on
    its own subject only (the registry reads the provider id from it), and replies on an inbox
    prefix of its own."""
    durable = daemon_consumer(provider_id)
    api = f"$JS.API.CONSUMER.%s.{TASKS_STREAM}.{durable}"
    return {
        "pub": {
            "allow": [
                api % "INFO",
                api % "CREATE" + "." + task_subject(provider_id),
                api % "MSG.NEXT",
                f"$JS.ACK.{TASKS_STREAM}.{durable}.>",
                f"$JS.API.STREAM.INFO.{TASKS_STREAM}",
                status_subject(ANY),
                log_subject(ANY),
                start_subject(provider_id),  # may I start this attempt? (its own only)
                heartbeat_subject(provider_id),  # its own beats only
            ]
        },
        "sub": {"allow": [f"{daemon_inbox(provider_id)}.>"]},
    }


def daemon_consumer(provider_id: str) -> str:
    return f"daemon-{provider_id}"


def daemon_inbox(provider_id: str) -> str:
    return f"_INBOX.{provider_id}"


def user_jwt(
    signer: KeyPair,
    account: str,
    user_public_key: str,
    name: str,
    permissions: dict[str, Any] | None = None,
    ttl_seconds: int | None = None,
) -> str:
    """A user JWT issued by the account's signing key; no permissions means all."""
    nats: dict[str, Any] = {
        "type": "user",
        "issuer_account": account,
        "subs": -1,
        "data": -1,
        "payload": -1,
        **(permissions or {}),
    }
    extra = {"exp": int(time.time()) + ttl_seconds} if ttl_seconds else {}
    return encode_jwt(signer, user_public_key, nats, name=name, **extra)


def creds_file(jwt: str, seed: str) -> str:
    """The standard ``.creds`` layout (``nats`` CLI, other clients read it too)."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )


def read_creds(text: str) -> tuple[str, str]:
    """(jwt, seed) from a ``.creds`` file's text."""
    blocks = [line.strip() for line in text.splitlines() if line.strip()]
    jwt = blocks[blocks.index("-----BEGIN NATS USER JWT-----") + 1]
    seed = blocks[blocks.index("-----BEGIN USER NKEY SEED-----") + 1]
    return jwt, seed


UNLIMITED_JS = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
    "mem_storage": -1,
    "disk_storage": -1,
    "streams": -1,
    "consumer": -1,
}


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.replace(path)


def bootstrap(directory: Path, store_dir: Path | None = None) -> Path:
    """Make (once) the operator, accounts, signing key and service creds in ``directory``, and
    (every time) the server config; returns the config path. Keys are kept across restarts."""
    directory.mkdir(parents=True, exist_ok=True)
    seeds_path = directory / "seeds.json"
    seeds = json.loads(seeds_path.read_text()) if seeds_path.exists() else {}
    kinds = {"operator": "operator", "account": "account", "signing": "account"}
    kinds |= {"system": "account", "service": "user"}
    missing = {k: KeyPair.generate(kind).seed for k, kind in kinds.items() if k not in seeds}
    if missing:  # a key removed from the file is made anew: that is how one is rotated
        seeds |= missing
        _write(seeds_path, json.dumps(seeds, indent=1))
    keys = {k: KeyPair.from_seed(v) for k, v in seeds.items()}
    operator, account, signing, system = (
        keys["operator"],
        keys["account"],
        keys["signing"],
        keys["system"],
    )
    op_jwt = encode_jwt(
        operator,
        operator.public_key,
        {"type": "operator", "system_account": system.public_key},
        name="dante",
    )
    acct_jwt = encode_jwt(
        operator,
        account.public_key,
        {"type": "account", "limits": UNLIMITED_JS, "signing_keys": [signing.public_key]},
        name="DANTE",
    )
    sys_jwt = encode_jwt(operator, system.public_key, {"type": "account", "limits": {}}, name="SYS")
    _write(directory / "operator.jwt", op_jwt, 0o644)
    _write(directory / "account-signing.seed", signing.seed + "\n")
    _write(directory / "account.pub", account.public_key + "\n", 0o644)
    service = user_jwt(signing, account.public_key, keys["service"].public_key, "services")
    _write(directory / "service.creds", creds_file(service, keys["service"].seed))
    store = f'\njetstream: {{store_dir: "{store_dir}"}}' if store_dir else ""
    config = (
        f'operator: "{directory / "operator.jwt"}"\n'
        f"system_account: {system.public_key}\n"
        "resolver: MEMORY\n"
        "resolver_preload: {\n"
        f"  {account.public_key}: {acct_jwt}\n"
        f"  {system.public_key}: {sys_jwt}\n"
        f"}}{store}\n"
    )
    path = directory / "server.conf"
    _write(path, config, 0o644)
    return path


def main() -> None:
    """``python -m shared.nats_auth DIR [STORE_DIR]``: the compose init step."""
    import sys

    store = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    print(bootstrap(Path(sys.argv[1]), store))


if __name__ == "__main__":
    main()
