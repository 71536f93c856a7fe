"""Where the CLI keeps the session: ``<config dir>/credentials.json``, mode 0600.

The config dir is ``$DANTE_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/dante``, else
``~/.config/dante``. ``DANTE_URL`` overrides the stored gateway URL; ``DANTE_TOKEN`` is used as
the access token as-is (no refresh), for CI jobs that mint their own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from dante_client._tokens import TokenStore
from dante_client.models import Tokens

try:
    import fcntl
except ImportError:  # Windows: no flock; concurrent refreshes are then not serialized
    fcntl = None  # type: ignore[assignment]

DEFAULT_URL = "http://127.0.0.1:8080"


def config_dir() -> Path:
    if explicit := os.environ.get("DANTE_CONFIG_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dante"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


@dataclass
class Profile:
    url: str = DEFAULT_URL
    username: str | None = None
    role: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    expires_at: str | None = None  # ISO 8601

    @property
    def expires(self) -> datetime | None:
        return datetime.fromisoformat(self.expires_at) if self.expires_at else None

    def with_tokens(self, tokens: Tokens) -> Profile:
        self.access_token = tokens.access_token
        self.refresh_token = tokens.refresh_token
        self.expires_at = tokens.expires_at.isoformat() if tokens.expires_at else None
        if tokens.username:
            self.username = tokens.username
        if tokens.role:
            self.role = tokens.role
        return self


def load() -> Profile:
    path = credentials_path()
    profile = Profile()
    if path.exists():
        try:
            data = json.loads(path.read_text())
            profile = Profile(**{k: v for k, v in data.items() if k in Profile.__annotations__})
        except (ValueError, TypeError):
            profile = Profile()
    return profile


def save(profile: Profile) -> Path:
    """Write atomically with mode 0600 from the start (never briefly world-readable)."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(profile), fh, indent=2)
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


def forget() -> None:
    credentials_path().unlink(missing_ok=True)


class FileTokenStore(TokenStore):
    """The credentials file as the CLI's token store, locked with ``flock`` while refreshing."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile

    @contextmanager
    def lock(self) -> Iterator[None]:
        path = credentials_path().with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def load(self) -> Tokens | None:
        kept = load()
        if not kept.refresh_token or not kept.access_token:
            return None
        return Tokens(
            access_token=kept.access_token,
            refresh_token=kept.refresh_token,
            expires_at=kept.expires,
        )

    def save(self, tokens: Tokens) -> None:
        save(self.profile.with_tokens(tokens))
