"""A handler's traceback over the real stack: on the failed attempt's event, in the
worker's log at ERROR with the job's ids, and out of the log when a setting says so."""

from __future__ import annotations

import re

from tests.integration.conftest import Stack, submit, wait_for_status


def _failed_attempt(stack: Stack) -> tuple[str, dict[str, object]]:
    with stack.client() as client:
        job = submit(client, "flaky", {"fail_attempts": 1})
        assert wait_for_status(client, job["id"])["status"] == "succeeded"
        events = client.get(f"/jobs/{job['id']}/events").json()
    failed = next(e for e in events if e["type"] == "AttemptFailed")
    return job["id"], failed["data"]


def test_the_traceback_is_on_the_event_and_in_the_log(stack: Stack) -> None:
    stack.start("run")
    stack.wait_ready()
    job_id, data = _failed_attempt(stack)
    traceback = str(data["traceback"])
    assert traceback.startswith("Traceback (most recent call last):")
    assert "in flaky" in traceback
    assert traceback.rstrip().endswith("RuntimeError: attempt 1 fails on purpose")

    shown = stack.cli("history", job_id, "--url", stack.url)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    at = next(n for n, line in enumerate(lines) if " AttemptFailed " in line)
    assert '"traceback"' not in lines[at]  # not squeezed into the event's line...
    under = [line.removeprefix("       | ") for line in lines[at + 1 :] if line.startswith("  ")]
    assert under[0] == "Traceback (most recent call last):"  # ...but whole, under it
    assert "RuntimeError: attempt 1 fails on purpose" in under

    log = stack.logs[0].read_text()
    record = re.search(r"ERROR \S+ flaky attempt 1: failed .*?(?=\n\d{4}-\d\d-\d\d |\Z)", log, re.S)
    assert record is not None, log[-3000:]
    assert "Traceback (most recent call last):" in record.group(0)
    assert f"job_id={job_id}" in record.group(0)


def test_a_setting_keeps_tracebacks_out_of_the_log(stack: Stack) -> None:
    stack.start("run", JOBLEDGER_WORKER__LOG_TRACEBACKS="false")
    stack.wait_ready()
    _, data = _failed_attempt(stack)
    assert "in flaky" in str(data["traceback"])  # the ledger keeps it
    log = stack.logs[0].read_text()
    assert "Traceback (most recent call last)" not in log
    assert "flaky attempt 1: failed" in log
