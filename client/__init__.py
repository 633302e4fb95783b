"""A typed Python client of the jobledger gateway, blocking and asyncio, on httpx.

    from client import Client, JobFailed

    with Client("http://127.0.0.1:8000", token) as jobs:
        handle = jobs.submit("segment", "case-42", {"scan_id": "scan-7"})
        for event in handle.progress():
            ...
        result = handle.result(timeout=60)

It speaks HTTP only and imports nothing of the server, so it can be installed and
used on its own."""

from client.aio import AsyncClient, AsyncJobHandle
from client.errors import (
    ApiError,
    Conflict,
    Forbidden,
    JobCancelled,
    JobFailed,
    JobledgerError,
    NotFound,
    RateLimited,
    Rejected,
    Unauthorized,
    Unreachable,
    WaitTimeout,
)
from client.models import (
    ErrorEvent,
    HistoryEvent,
    Job,
    JobSpec,
    ProgressEvent,
    ResultEvent,
    Schedule,
    StatusEvent,
    StreamEvent,
    Submitted,
)
from client.sync import Client, JobHandle

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncJobHandle",
    "Client",
    "Conflict",
    "ErrorEvent",
    "Forbidden",
    "HistoryEvent",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobHandle",
    "JobSpec",
    "JobledgerError",
    "NotFound",
    "ProgressEvent",
    "RateLimited",
    "Rejected",
    "ResultEvent",
    "Schedule",
    "StatusEvent",
    "StreamEvent",
    "Submitted",
    "Unauthorized",
    "Unreachable",
    "WaitTimeout",
]
