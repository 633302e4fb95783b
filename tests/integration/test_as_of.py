"""A job as of a past time, and its history up to one, over real HTTP: what the API
answered then, folded from the ledger."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.conftest import Stack, eventually, submit, wait_for_status

# Its tests that take ``running`` keep to jobs, cases and tenants of their own.
pytestmark = pytest.mark.shared_stack


SETTLED_S = 0.3  # longer than a commit takes after its event's time is taken


def _now() -> datetime:
    return datetime.now(UTC)


def _parsed(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _at(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_as_of_answers_what_the_api_answered_then(running: Stack) -> None:
    with running.client() as client:
        job = submit(client, "flaky", {"fail_attempts": 2})  # two 1 s waits
        recorded: list[tuple[datetime, dict[str, Any], int]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            began = _now()
            live = client.get(f"/jobs/{job['id']}").json()
            events = len(client.get(f"/jobs/{job['id']}/events").json())
            ended = _now()
            time.sleep(SETTLED_S)
            # Kept only if nothing changed across the read: then "as of" any time in
            # it is exactly what was read.
            if client.get(f"/jobs/{job['id']}").json() == live:
                recorded.append((began + (ended - began) / 2, live, events))
            if live["status"] == "succeeded":
                break
        # An event's time is taken before its commit: one stamped before a read but
        # committed after it (a commit slower than SETTLED_S, on a loaded machine) was
        # not in what the API answered then, though "as of" that time takes it. Such
        # reads are left out, by the whole history's times.
        stamped = [_parsed(e["at"]) for e in client.get(f"/jobs/{job['id']}/events").json()]
        recorded = [r for r in recorded if sum(at <= r[0] for at in stamped) == r[2]]
        statuses = {live["status"] for _, live, _ in recorded}
        assert {"retry_scheduled", "succeeded"} <= statuses, statuses

        for moment, live, events in recorded:
            then = client.get(f"/jobs/{job['id']}", params={"as_of": _at(moment)})
            assert then.status_code == 200, then.text
            assert then.json() == live, moment
            history = client.get(f"/jobs/{job['id']}/events", params={"until": _at(moment)})
            assert len(history.json()) == events, moment


def test_as_of_before_the_job_existed_and_bad_times(running: Stack) -> None:
    with running.client() as client, running.client(tenant="another-tenant") as other:
        before = _now() - timedelta(seconds=1)
        job = submit(client, "echo", {"text": "x"})
        done = wait_for_status(client, job["id"])
        url = f"/jobs/{job['id']}"

        earlier = client.get(url, params={"as_of": _at(before)})
        assert earlier.status_code == 404
        assert "did not exist yet" in earlier.json()["detail"]
        assert client.get(f"{url}/events", params={"until": _at(before)}).json() == []
        # Another tenant's job is not found, at any time.
        assert other.get(url, params={"as_of": _at(_now())}).status_code == 404
        assert other.get(f"{url}/events", params={"until": _at(_now())}).status_code == 404
        # Later than now is now; an offset other than Z is the same instant.
        later = _now() + timedelta(days=1)
        assert client.get(url, params={"as_of": _at(later)}).json() == done
        offset = later.astimezone(datetime.now().astimezone().tzinfo).isoformat()
        assert client.get(url, params={"as_of": later.isoformat()}).json() == done, offset

        for bad in ("yesterday", "2026-12-03", "1764750000", "2026-12-03T09:30:00", ""):
            for path, name in ((url, "as_of"), (f"{url}/events", "until")):
                response = client.get(path, params={name: bad})
                assert response.status_code == 422, (bad, response.text)
                assert response.json()["detail"][0]["loc"] == ["query", name], response.text
        unencoded = client.get(f"{url}?as_of=2026-12-03T09:30:00+00:00")  # '+' is a space
        assert unencoded.status_code == 422
        assert "%2B" in unencoded.text


def test_a_case_as_of_lists_its_jobs_as_they_were(running: Stack) -> None:
    case = f"case-{uuid.uuid4().hex[:8]}"
    with running.client() as client:
        before = _now() - timedelta(seconds=1)
        first = submit(client, "echo", {"text": "a"}, case_id=case)
        wait_for_status(client, first["id"])
        second = submit(client, "flaky", {"fail_attempts": 2}, case_id=case)
        ids = [second["id"], first["id"]]  # newest first
        recorded: list[tuple[datetime, list[dict[str, Any]]]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            began = _now()
            live = [client.get(f"/jobs/{job_id}").json() for job_id in ids]
            ended = _now()
            time.sleep(SETTLED_S)
            if [client.get(f"/jobs/{job_id}").json() for job_id in ids] == live:
                recorded.append((began + (ended - began) / 2, live))
            if live[0]["status"] == "succeeded":
                break
        assert "retry_scheduled" in {jobs[0]["status"] for _, jobs in recorded}

        url = f"/jobs/{case}/jobs"
        for moment, live in recorded:
            then = client.get(url, params={"as_of": _at(moment)})
            assert then.status_code == 200, then.text
            assert then.json() == {"items": live, "next_cursor": None}, moment
            retrying = client.get(url, params={"as_of": _at(moment), "status": "retry_scheduled"})
            assert retrying.json()["items"] == [j for j in live if j["status"] == "retry_scheduled"]
        # Pages as of a time, one job a page; none before the first job.
        last = _at(recorded[-1][0])
        page = client.get(url, params={"as_of": last, "limit": 1}).json()
        rest = client.get(url, params={"as_of": last, "cursor": page["next_cursor"]}).json()
        assert [j["id"] for j in page["items"] + rest["items"]] == ids
        assert rest["next_cursor"] is None
        assert client.get(url, params={"as_of": _at(before)}).json()["items"] == []
        # The live listing (the view) agrees with the ledger once it has caught up.
        eventually(lambda: client.get(url).json()["items"] == recorded[-1][1], 10, "the view")


def test_the_history_command_shows_every_event_with_its_actor_and_trace(running: Stack) -> None:
    with running.client() as client:
        job = submit(client, "flaky", {"fail_attempts": 1})
        wait_for_status(client, job["id"])
        events = client.get(f"/jobs/{job['id']}/events").json()
    result = running.cli("history", job["id"], "--url", running.url)
    assert result.returncode == 0, result.stderr
    header, columns, *printed = result.stdout.splitlines()
    lines = [line for line in printed if not line.startswith("       | ")]  # a traceback's
    assert header.startswith(f"job {job['id']}  flaky  case case-1  succeeded  attempt 2/3")
    assert columns.split()[:4] == ["#", "at", "(UTC)", "after"]
    assert [line.split()[4] for line in lines] == [e["type"] for e in events]
    failed = next(line for line in lines if "AttemptFailed" in line)
    assert "attempt 1 fails on purpose" in failed
    for line, event in zip(lines, events, strict=True):
        traceparent = event["traceparent"]
        trace_id = traceparent.split("-")[1] if traceparent else "-"
        assert line.split()[6:8] == [event["actor"], trace_id], line
    assert all("+" in line.split()[3] for line in lines[1:])  # the time since the last

    # As of its submission: the one event, and the job then.
    first = events[0]["at"]
    then = running.cli("history", job["id"], "--url", running.url, "--as-of", first)
    assert then.returncode == 0, then.stderr
    assert "queued as of" in then.stdout.splitlines()[0]
    assert len(then.stdout.splitlines()) == 3

    refused = running.cli("history", job["id"], "--url", running.url, "--as-of", "yesterday")
    assert refused.returncode == 1
    assert refused.stderr.startswith("422: ")
    unknown = running.cli("history", str(uuid.uuid4()), "--url", running.url)
    assert (unknown.returncode, unknown.stderr.split(":")[0]) == (1, "404")
