"""The scheduler's domain errors, in one place (the adapters and the use cases both raise them)."""

from __future__ import annotations

from shared.errors import Conflict


class IllegalTransition(Conflict):
    """A state change the job state machine (``states.ALLOWED``) does not allow."""

    code = "illegal_transition"


class StorageUnavailable(Exception):
    """Presigning failed for a reason that may pass (storage down, auth not ready)."""


class MissingInput(Exception):
    """A declared input does not exist in the owner's namespace: the job can never run."""
