"""The Dante SDK: ``Client`` (sync) and ``AsyncClient``, typed models, errors, job files."""

from dante_client._policy import RetryPolicy
from dante_client._tokens import TokenStore
from dante_client.aio import AsyncClient
from dante_client.client import Client
from dante_client.errors import (
    AuthenticationError,
    Conflict,
    DanteError,
    InvalidRequest,
    JobFileError,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
    Unreachable,
)
from dante_client.jobfile import JobFile
from dante_client.jobfile import load as load_job_file
from dante_client.models import (
    ApiKey,
    Job,
    JobEvent,
    JobPage,
    LogLine,
    NewApiKey,
    ObjectPage,
    Provider,
    StoredObject,
    Submitted,
    Tokens,
    Usage,
    User,
)

__version__ = "0.1.0"

__all__ = [
    "ApiKey",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "Conflict",
    "DanteError",
    "InvalidRequest",
    "Job",
    "JobEvent",
    "JobFile",
    "JobFileError",
    "JobPage",
    "LogLine",
    "NewApiKey",
    "NotFound",
    "ObjectPage",
    "PermissionDenied",
    "Provider",
    "RateLimited",
    "RetryPolicy",
    "ServiceUnavailable",
    "StoredObject",
    "Submitted",
    "TokenStore",
    "Tokens",
    "Unreachable",
    "Usage",
    "User",
    "load_job_file",
]
