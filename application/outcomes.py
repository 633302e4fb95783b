"""How an attempt's handler ended, and the one rule that turns what it raised into
that: used for handlers on the loop, in a thread and in a child process alike."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any


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


MAX_ERROR_CHARS = 2000
MAX_TRACEBACK_CHARS = 16384  # the end of it: the raising frames and the error


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: a result, an error (retryable or not, with the delay the
    handler asked for), a confirmed cancel, or an interruption (a shutdown)."""

    result: dict[str, Any] | None = None
    error: str | None = None
    retryable: bool = True
    retry_delay_s: float | None = None
    cancelled: bool = False
    interrupted: bool = False
    traceback: str | None = None  # where the handler raised, formatted

    @property
    def name(self) -> str:
        if self.interrupted:
            return "interrupted"
        if self.cancelled:
            return "cancelled"
        return "failed" if self.error is not None else "succeeded"


def classify(
    exc: BaseException,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    *,
    cancel_requested: bool = False,
) -> Outcome:
    """The outcome of a handler that raised ``exc``. ``Retry`` asks for another
    attempt; ``PermanentError`` never gets one; other errors are retried when they are
    among the job type's ``retry_on``. ``JobCancelled`` is a cancel only when one was
    asked for; raised on its own, it is a failure like any other."""
    if isinstance(exc, JobCancelled) and cancel_requested:
        return Outcome(cancelled=True)
    formatted = formatted_traceback(exc)
    if isinstance(exc, Retry):
        return Outcome(
            error=f"Retry: {exc}", retryable=True, retry_delay_s=exc.delay_s, traceback=formatted
        )
    retryable = isinstance(exc, retry_on) and not isinstance(exc, (PermanentError, JobCancelled))
    return Outcome(
        error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS],
        retryable=retryable,
        traceback=formatted,
    )


def formatted_traceback(exc: BaseException) -> str | None:
    """The exception's traceback as Python prints it, its last ``MAX_TRACEBACK_CHARS``;
    None for an exception never raised (no frames)."""
    if exc.__traceback__ is None:
        return None
    text = "".join(traceback.format_exception(exc))
    if len(text) > MAX_TRACEBACK_CHARS:
        text = "…" + text[-(MAX_TRACEBACK_CHARS - 1) :]
    return text
