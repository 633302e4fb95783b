"""The client's errors: one class per answer a caller handles differently.

Every error is a ``JobledgerError``. An HTTP answer the client does not expect is an
``ApiError`` carrying its status and body; the statuses a caller acts on have their
own subclass. A job that ended badly is a ``JobFailed`` or a ``JobCancelled``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from client.models import Job


class JobledgerError(Exception):
    """Anything the client raises on purpose."""


class Unreachable(JobledgerError):
    """The gateway could not be reached (or a stream could not be resumed) after the
    client's attempts; the transport's error is the ``__cause__``."""


class WaitTimeout(JobledgerError, TimeoutError):
    """The job did not finish within the time given to ``wait`` or ``result``."""

    def __init__(self, job_id: str, timeout: float) -> None:
        super().__init__(f"job {job_id} did not finish within {timeout:g} s")
        self.job_id = job_id
        self.timeout = timeout


class ApiError(JobledgerError):
    """The gateway answered with an error status: ``status`` and the decoded ``body``
    (JSON, or the text when it was not JSON); ``detail`` is the body's ``detail``."""

    def __init__(self, status: int, body: Any, message: str | None = None) -> None:
        self.status = status
        self.body = body
        self.detail: Any = body.get("detail") if isinstance(body, dict) else body
        super().__init__(message or f"{status}: {_short(self.detail)}")


class NotFound(ApiError):
    """404: no such job for this tenant (another tenant's job answers the same)."""


class Forbidden(ApiError):
    """403: the token lacks the scope the request needs."""


class Unauthorized(Forbidden):
    """401: no token, or one the gateway does not accept (expired, wrong key, …);
    ``reason`` is the gateway's."""

    @property
    def reason(self) -> str:
        return str(self.detail)


class Conflict(ApiError):
    """409: the job's state does not allow it (a finished job cancelled, a running
    one retried), or an idempotency key was used for another job. ``job_status`` is
    the job's status when the gateway names it."""

    @property
    def job_status(self) -> str | None:
        status = self.body.get("status") if isinstance(self.body, dict) else None
        return status if isinstance(status, str) else None


class Rejected(ApiError):
    """422: the request is invalid: an unknown job type (``registered`` lists the
    known ones), params the job type refuses, a malformed value. ``errors`` holds the
    gateway's field errors (``loc``, ``msg``, ``type``); ``reason`` joins them."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        if isinstance(self.detail, list):
            return [e for e in self.detail if isinstance(e, dict)]
        return []

    @property
    def registered(self) -> list[str] | None:
        known = self.body.get("registered") if isinstance(self.body, dict) else None
        return list(known) if isinstance(known, list) else None

    @property
    def reason(self) -> str:
        if not self.errors:
            return str(self.detail)
        return "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg', '')}" for e in self.errors
        )


class RateLimited(ApiError):
    """429: the tenant's quota (submits a second, or jobs waiting) is spent;
    ``retry_after`` is how many seconds the gateway asks to wait, when it says."""

    def __init__(self, status: int, body: Any, retry_after: float | None) -> None:
        super().__init__(status, body)
        self.retry_after = retry_after


class JobFailed(JobledgerError):
    """The job failed: ``error`` is the job's error, ``traceback`` the handler's
    traceback of the last failed attempt ("" when the handler did not raise one), and
    ``job`` the job as it ended."""

    def __init__(self, job: Job, traceback: str) -> None:
        super().__init__(f"job {job.id} failed: {job.error}")
        self.job = job
        self.error = job.error or ""
        self.traceback = traceback


class JobCancelled(JobledgerError):
    """The job was cancelled before it finished; ``job`` is the job as it ended."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} was cancelled")
        self.job = job


def _short(detail: Any) -> str:
    text = str(detail)
    return text if len(text) <= 300 else text[:299] + "…"
