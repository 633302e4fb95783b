"""The domain's errors. Each docstring is the default message."""

from __future__ import annotations


class LedgerError(Exception):
    """The job ledger refused the command."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or "").strip())


class JobNotFound(LedgerError):
    """No such job."""


class InvalidTransition(LedgerError):
    """The job's current state does not allow this command."""

    def __init__(self, status: str, command: str) -> None:
        super().__init__(f"cannot {command} a job that is {status}")
        self.status = status
        self.command = command


class StaleDelivery(InvalidTransition):
    """The delivery is for an attempt that is no longer due."""


class NotDueYet(LedgerError):
    """The job is scheduled for later: it may not start yet."""

    def __init__(self, run_at: object, wait_s: float) -> None:
        super().__init__(f"the job is scheduled for {run_at}")
        self.run_at = run_at
        self.wait_s = wait_s


class DuplicateSubmission(LedgerError):
    """A job with this id was already submitted."""


class InvalidProgress(LedgerError):
    """Progress must be a percentage between 0 and 100."""


class InvalidPriority(LedgerError):
    """A job's priority is high, normal or low."""

    def __init__(self, value: str) -> None:
        super().__init__(f"priority {value!r} is not one of high, normal, low")


class UnknownJobType(LedgerError):
    """No job type of this name is registered."""

    def __init__(self, name: str, registered: list[str]) -> None:
        super().__init__(
            f"unknown job type {name!r}; registered: {', '.join(registered) or 'none'}"
        )
        self.name = name
        self.registered = registered


class InvalidParams(LedgerError):
    """The job's params do not match its type's declaration."""

    def __init__(self, job_type: str, errors: list[dict[str, object]]) -> None:
        super().__init__(f"invalid params for {job_type!r}")
        self.job_type = job_type
        self.errors = errors
