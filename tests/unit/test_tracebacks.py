"""A failed attempt keeps where its handler raised: classified with its traceback,
bounded, recorded on AttemptFailed; events stored before that load with none."""

from __future__ import annotations

from dataclasses import replace

from eventsourcing.persistence import StoredEvent

from application.outcomes import MAX_TRACEBACK_CHARS, PermanentError, Retry, classify
from domain.job import Job
from domain.ledger import JobLedger
from tests.unit.test_ledger import ORIGIN, ledger, submit

__all__ = ["ledger"]


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_a_failure_keeps_its_traceback() -> None:
    outcome = classify(_raised(PermanentError("no such scan")))
    assert outcome.traceback is not None
    assert outcome.traceback.startswith("Traceback (most recent call last):")
    assert "in _raised" in outcome.traceback
    assert outcome.traceback.rstrip().endswith("PermanentError: no such scan")
    assert classify(_raised(Retry("later", delay_s=1))).traceback is not None


def test_a_long_traceback_keeps_its_end() -> None:
    outcome = classify(_raised(RuntimeError("x" * 20000 + " the end")))
    assert outcome.traceback is not None
    assert len(outcome.traceback) == MAX_TRACEBACK_CHARS
    assert outcome.traceback.startswith("…")
    assert outcome.traceback.rstrip().endswith("x the end")


def test_an_exception_never_raised_has_no_traceback() -> None:
    assert classify(RuntimeError("made, not raised")).traceback is None


def test_the_traceback_is_recorded_on_the_failed_attempt(ledger: JobLedger) -> None:
    job_id = submit(ledger).job.id
    ledger.start_job(job_id, 1, "w1", ORIGIN)
    ledger.fail_attempt(
        job_id,
        "RuntimeError: boom",
        retryable=True,
        retry_delay_s=1,
        origin=ORIGIN,
        traceback="Traceback (most recent call last):\n  ...\nRuntimeError: boom\x00",
    )
    failed = ledger.job_history(job_id)[-1]
    assert isinstance(failed, Job.AttemptFailed)
    assert failed.traceback.startswith("Traceback") and "\x00" not in failed.traceback


def test_a_failed_attempt_stored_before_tracebacks_loads_with_none(
    ledger: JobLedger,
) -> None:
    job_id = submit(ledger).job.id
    ledger.start_job(job_id, 1, "w1", ORIGIN)
    ledger.fail_attempt(job_id, "boom", retryable=True, retry_delay_s=1, origin=ORIGIN)
    stored = ledger.recorder.select_events(job_id)[-1]
    state = ledger.mapper.transcoder.decode(stored.state)
    assert state.pop("class_version") == 2
    del state["traceback"]  # the shape of version 1
    old = replace(stored, state=ledger.mapper.transcoder.encode(state))
    assert isinstance(old, StoredEvent)
    loaded = ledger.mapper.to_domain_event(old)
    assert isinstance(loaded, Job.AttemptFailed)
    assert (loaded.traceback, loaded.error) == ("", "boom")
