"""What a handler receives besides its params."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID


class JobCancelled(Exception):
    """The job was cancelled while it ran; raise it (or let ``check_cancelled``
    raise it) to stop a handler early."""


class PermanentError(Exception):
    """A failure that another attempt cannot fix: the job fails without retrying."""


class Retry(Exception):
    """Raise to ask for another attempt, after ``delay_s`` seconds if given (else the
    job type's backoff). It still counts as a failed attempt."""

    def __init__(self, reason: str = "retry requested", *, delay_s: float | None = None) -> None:
        super().__init__(reason)
        self.delay_s = delay_s


@dataclass
class JobContext:
    """A running job's view of itself. ``progress`` may be called from any thread
    and as often as the handler likes: reports are coalesced before they reach the
    ledger, and the last one always lands."""

    job_id: UUID
    job_type: str
    attempt: int
    tenant: str
    case_id: str
    correlation_id: str
    logger: logging.Logger
    report: Callable[[int, str], None]
    _cancelled: threading.Event = field(default_factory=threading.Event)

    def progress(self, percent: float, message: str = "") -> None:
        self.report(max(0, min(100, int(percent))), message)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise JobCancelled

    def cancel(self) -> None:
        self._cancelled.set()
