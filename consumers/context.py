"""What a handler receives besides its params."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from application.outcomes import JobCancelled, PermanentError, Retry

__all__ = ["JobCancelled", "JobContext", "PermanentError", "Retry"]


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
