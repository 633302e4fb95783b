"""Correlation ids and the job a piece of work is about.

A correlation id comes from outside (a request header, a message): only a well
formed one is kept, so a hostile value never reaches a log line, a header or a span.
``about`` binds the ids of the job in hand to the current context (task or thread);
log records and spans read them from there."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

CORRELATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_bound: ContextVar[dict[str, str | int]] = ContextVar("jobledger_job_ids", default={})  # noqa: B039


def well_formed(value: str) -> bool:
    return CORRELATION_ID.fullmatch(value) is not None


def accept_or_new(value: str | None) -> str:
    """``value`` when it is a well formed correlation id, a new one otherwise."""
    return value if value and well_formed(value) else uuid.uuid4().hex


def accept_or_empty(value: str) -> str:
    return value if well_formed(value) else ""


@contextmanager
def about(**ids: str | int | None) -> Iterator[None]:
    """Bind ``correlation_id``, ``job_id``, ``attempt``… for the code inside."""
    token = _bound.set({**_bound.get(), **{k: v for k, v in ids.items() if v not in (None, "")}})
    try:
        yield
    finally:
        _bound.reset(token)


def bind(**ids: str | int | None) -> None:
    """Bind ids for the rest of the current task (a message's task, a request)."""
    _bound.set({**_bound.get(), **{k: v for k, v in ids.items() if v not in (None, "")}})


def bound() -> dict[str, str | int]:
    """The ids bound to the current context."""
    return _bound.get()
