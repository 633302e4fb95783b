"""No log line of the HTTP stack quotes what a request carried."""

from __future__ import annotations

import io
import logging

import pytest

from infra import logs


@pytest.mark.parametrize("json_lines", [False, True], ids=["text", "json"])
def test_an_error_while_serving_a_request_is_logged_without_its_message(
    json_lines: bool,
) -> None:
    out = io.StringIO()
    logs.configure("info", json_lines=json_lines)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    first, second = "PATIENT_SECRET_1", "PATIENT_SECRET_2"  # what a request carried
    try:
        try:
            try:
                raise ValueError(f"input_value={first!r}")
            except ValueError as inner:
                raise RuntimeError(f"while handling {second}") from inner
        except RuntimeError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
            logging.getLogger("jobledger.worker").exception("a handler failed")
    finally:
        logs.configure("warning", json_lines=False)

    written = out.getvalue()
    request_line, worker_line = written.split("a handler failed")
    assert "PATIENT_SECRET" not in request_line
    assert "RuntimeError" in request_line and "ValueError" in request_line
    assert "message withheld" in request_line
    assert "PATIENT_SECRET_2" in worker_line  # a handler's own error keeps its text
