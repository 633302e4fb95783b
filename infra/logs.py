"""Log lines that say which job they are about.

A filter on the root handler adds the ids bound to the current task or thread
(``domain.correlation``: correlation_id, job_id, attempt) and the current trace id
to every record; the formatter writes them as ``key=value`` after the message, or
the whole record as one JSON object per line.

An error in the HTTP stack (uvicorn, Starlette, FastAPI, the gateway's routes) is
logged with its traceback but without its exception's message: messages such as a
validation error's quote the request's input, and patient data never reaches a log."""

from __future__ import annotations

import json
import logging
import traceback
from datetime import UTC, datetime

from opentelemetry import trace

from domain.correlation import bound

FIELDS = ("correlation_id", "job_id", "attempt", "trace_id")
_CONTROL = {c: f"\\x{c:02x}" for c in range(32)} | {0x7F: "\\x7f"}


class JobIds(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ids: dict[str, str | int] = dict(bound())
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            ids["trace_id"] = trace.format_trace_id(context.trace_id)
        record.job_ids = ids
        return True


# Loggers that report errors met while serving a request.
REQUEST_LOGGERS = ("uvicorn", "starlette", "fastapi", "jobledger.gateway")


class WithholdRequestData(logging.Filter):
    """Logs an HTTP request's error as its traceback and its exception's type (and
    those of its causes), never their messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] and record.name.startswith(REQUEST_LOGGERS):
            record.exc_text = _without_messages(record.exc_info[1])
            record.exc_info = None
        return True


def _without_messages(exc: BaseException) -> str:
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(traceback.format_tb(current.__traceback__))
        parts.append(
            f"Traceback (most recent call last):\n{frames}{type(current).__qualname__}: "
            "(message withheld: it may quote the request)"
        )
        current = current.__cause__ or current.__context__
    return "\n\nCaused by:\n".join(parts)


class TextFormatter(logging.Formatter):
    """``time level logger message key=value…``; control characters in the message
    are escaped, so one record is one line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        ids: dict[str, str | int] = getattr(record, "job_ids", {})
        record.message = record.message.translate(_CONTROL)
        suffix = "".join(f" {k}={ids[k]}" for k in FIELDS if k in ids)
        return super().formatMessage(record) + suffix


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids: dict[str, str | int] = getattr(record, "job_ids", {})
        line.update({k: ids[k] for k in FIELDS if k in ids})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=True)


def configure(level: str, *, json_lines: bool) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(JobIds())
    handler.addFilter(WithholdRequestData())
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # A line per HTTP request of the command-line clients would bury what they show.
    for noisy in ("aio_pika", "aiormq", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
