"""NKEY encoding and the bootstrap's keep-or-rotate behaviour (the server tests use both)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.nats_auth import KeyPair, bootstrap, read_creds


@pytest.mark.parametrize("kind,first", [("user", "U"), ("account", "A"), ("operator", "O")])
def test_a_seed_round_trips_to_the_same_key(kind: str, first: str) -> None:
    key = KeyPair.generate(kind)
    again = KeyPair.from_seed(key.seed)
    assert key.public_key.startswith(first) and len(key.public_key) == 56
    assert key.seed.startswith("S" + first) and again.public_key == key.public_key
    assert again.sign(b"nonce") == key.sign(b"nonce")  # Ed25519 is deterministic


def test_a_mistyped_seed_fails_its_checksum() -> None:
    seed = KeyPair.generate("user").seed
    broken = seed[:10] + ("A" if seed[10] != "A" else "B") + seed[11:]
    with pytest.raises(ValueError):
        KeyPair.from_seed(broken)


def test_bootstrap_keeps_keys_and_rotates_only_what_was_removed(tmp_path: Path) -> None:
    bootstrap(tmp_path)
    account = (tmp_path / "account.pub").read_text()
    service_jwt, _ = read_creds((tmp_path / "service.creds").read_text())
    bootstrap(tmp_path)  # a restart
    assert (tmp_path / "account.pub").read_text() == account
    seeds = json.loads((tmp_path / "seeds.json").read_text())
    del seeds["service"]
    (tmp_path / "seeds.json").write_text(json.dumps(seeds))
    bootstrap(tmp_path)
    rotated, _ = read_creds((tmp_path / "service.creds").read_text())
    assert (tmp_path / "account.pub").read_text() == account
    assert rotated.split(".")[1] != service_jwt.split(".")[1]
