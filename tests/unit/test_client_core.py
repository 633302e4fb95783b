"""The client's pure parts: errors from statuses, batch error indices, and the
stream follower's bookkeeping (no duplicate after a reconnect, the end, the pauses)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import httpx
import pytest

from client import (
    ApiError,
    Conflict,
    Forbidden,
    Job,
    JobSpec,
    NotFound,
    ProgressEvent,
    RateLimited,
    Rejected,
    ResultEvent,
    Unauthorized,
    Unreachable,
    WaitTimeout,
)
from client._core import Core, Follower, error_of, rebased

AT = "2026-12-03T09:30:00.123456Z"


def response(status: int, body: object = None, **headers: str) -> httpx.Response:
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def test_each_status_has_its_error() -> None:
    assert type(error_of(response(401, {"detail": "token expired"}))) is Unauthorized
    assert isinstance(error_of(response(401, {"detail": "x"})), Forbidden)
    assert type(error_of(response(403, {"detail": "x"}))) is Forbidden
    assert type(error_of(response(404, {"detail": "job not found"}))) is NotFound
    conflict = error_of(response(409, {"detail": "finished", "status": "failed"}))
    assert isinstance(conflict, Conflict) and conflict.job_status == "failed"
    limited = error_of(response(429, {"detail": "quota"}, **{"Retry-After": "3"}))
    assert isinstance(limited, RateLimited) and limited.retry_after == 3.0
    broken = error_of(response(502, "<html>bad gateway</html>"))
    assert type(broken) is ApiError and broken.status == 502
    assert broken.body == broken.detail == "<html>bad gateway</html>"


def test_a_refused_batch_names_jobs_by_their_index_in_the_whole_list() -> None:
    body = {
        "detail": [
            {"loc": ["body", "jobs", 1, "params", "x"], "msg": "Field required", "type": "m"},
            {"loc": ["body", "jobs", 0, "type"], "msg": "unknown", "type": "u"},
        ]
    }
    refused = rebased(error_of(response(422, body)), 2000)
    assert isinstance(refused, Rejected)
    assert [e["loc"][2] for e in refused.errors] == [2001, 2000]
    assert refused.reason == "body.jobs.2001.params.x: Field required; body.jobs.2000.type: unknown"


def frame(position: int, kind: str, event_type: str, **data: object) -> list[str]:
    payload = (
        f'{{"position": {position}, "job_id": "j", "case_id": "c", "job_type": "t", '
        f'"type": "{event_type}", "status": "running", "attempt": 1, "actor": "w", '
        f'"correlation_id": "x", "at": "{AT}", "data": {json.dumps(data)}}}'
    )
    return [f"id: {position}", f"event: {kind}", f"data: {payload}", ""]


def test_the_follower_resumes_after_the_last_event_and_never_repeats_one() -> None:
    follower = Follower(Core("http://gw", "tok", 5), "j")
    assert "Last-Event-ID" not in follower.request()["headers"]
    lines = [": keep-alive", *frame(7, "progress", "ProgressReported", percent=10, message="m")]
    events = [e for line in lines if (e := follower.feed(line)) is not None]
    assert len(events) == 1 and isinstance(events[0], ProgressEvent)
    assert events[0].percent == 10 and events[0].at.year == 2026
    assert follower.broken(httpx.ReadError("cut")) == 0.25
    assert follower.request()["headers"]["Last-Event-ID"] == "7"
    # The gateway never sends what precedes Last-Event-ID; the follower drops it anyway.
    again = frame(7, "progress", "ProgressReported", percent=10, message="m")
    assert [follower.feed(line) for line in again] == [None] * 4
    done = [
        e
        for line in frame(9, "result", "Succeeded", result={"ok": 1})
        if (e := follower.feed(line))
    ]
    assert isinstance(done[0], ResultEvent) and done[0].result == {"ok": 1}
    assert follower.closed() is None  # the stream ended after its terminal event


def test_the_follower_backs_off_then_gives_up_and_keeps_its_deadline() -> None:
    follower = Follower(Core("http://gw", None, 5), "j", max_failures=4)
    assert [follower.broken(None) for _ in range(3)] == [0.25, 0.5, 1.0]
    with pytest.raises(Unreachable):
        follower.broken(httpx.ConnectError("refused"))
    late = Follower(Core("http://gw", None, 5), "j", timeout=0.01)
    time.sleep(0.02)
    with pytest.raises(WaitTimeout) as timed_out:
        late.request()
    assert isinstance(timed_out.value, TimeoutError)


def test_a_submit_carries_run_at_or_delay_s_and_a_job_reads_its_run_at() -> None:
    core = Core("http://gw", None, 5)
    at = datetime(2026, 12, 24, 8, tzinfo=UTC)
    assert core.submit("echo", "c", {}, None, None, run_at=at).json["run_at"] == at.isoformat()
    assert core.submit("echo", "c", {}, None, None, delay_s=5).json["delay_s"] == 5
    plain = core.submit("echo", "c", {}, None, None).json
    assert "run_at" not in plain and "delay_s" not in plain
    with pytest.raises(ValueError, match="offset"):
        core.submit("echo", "c", {}, None, None, run_at=datetime(2026, 12, 24))
    assert JobSpec("echo", "c", run_at=AT).to_json()["run_at"] == AT
    assert JobSpec("echo", "c", delay_s=1.5).to_json()["delay_s"] == 1.5
    job = Job.from_json(
        {
            "id": "j",
            "type": "echo",
            "case_id": "c",
            "status": "scheduled",
            "submitted_at": AT,
            "run_at": AT,
        }
    )
    assert job.run_at is not None and job.run_at.isoformat().startswith("2026-12-03T09:30:00")


def test_schedule_calls_send_only_the_fields_given() -> None:
    core = Core("http://gw/", "tok", 5.0)
    add = core.add_schedule("nightly", "30 2 * * *", "segment", "c1", zone=None, paused=True)
    assert (add.method, add.path) == ("POST", "/schedules")
    assert add.json == {
        "name": "nightly",
        "cron": "30 2 * * *",
        "type": "segment",
        "case_id": "c1",
        "paused": True,
    }
    change = core.change_schedule("a/b", cron=None, paused=False)
    assert (change.method, change.path, change.json) == (
        "PATCH",
        "/schedules/a%2Fb",
        {"paused": False},
    )
