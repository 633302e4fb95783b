"""The main path over real HTTP, PostgreSQL, RabbitMQ and processes."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.conftest import Stack, eventually, submit, wait_for_status

# Its tests that take ``running`` keep to jobs, cases and tenants of their own.
pytestmark = pytest.mark.shared_stack


def test_a_submitted_job_succeeds_and_its_history_shows_every_transition_in_order(
    running: Stack,
) -> None:
    with running.client() as client:
        job = submit(client, "nap", {"seconds": 0.3})
        done = wait_for_status(client, job["id"])
        events = client.get(f"/jobs/{job['id']}/events").json()

    assert done["status"] == "succeeded"
    assert done["result"] == {"slept": 0.3}
    assert done["progress"] == 100
    types = [e["type"] for e in events]
    assert types[:2] == ["Submitted", "Started"]
    assert types[-1] == "Succeeded"
    progress = [e["data"]["percent"] for e in events if e["type"] == "ProgressReported"]
    assert progress, "the handler's progress reached the ledger"
    assert progress == sorted(progress) and progress[-1] == 100
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert events[1]["attempt"] == 1 and events[1]["data"]["worker_id"]


def test_a_failing_handler_ends_failed_with_its_error(running: Stack) -> None:
    with running.client() as client:
        job = submit(client, "fail", {"message": "scan is corrupt"})
        done = wait_for_status(client, job["id"])
        types = [e["type"] for e in client.get(f"/jobs/{job['id']}/events").json()]

    assert done["status"] == "failed"
    assert "scan is corrupt" in done["error"]
    assert types == ["Submitted", "Started", "AttemptFailed", "Failed"]


def test_a_client_reads_its_own_writes(running: Stack) -> None:
    with running.client() as client:
        response = client.post(
            "/jobs", json={"type": "echo", "case_id": "rw-1", "params": {"text": "hi"}}
        )
        job_id = response.json()["id"]
        assert response.headers["Location"] == f"/jobs/{job_id}"
        assert client.get(f"/jobs/{job_id}").json()["id"] == job_id

        listed = client.get(
            "/jobs/rw-1/jobs",
            headers={"X-Ledger-Position": response.headers["X-Ledger-Position"]},
        ).json()
        assert [j["id"] for j in listed["items"]] == [job_id]


def test_cancelling_a_queued_job_means_it_never_runs(stack: Stack) -> None:
    # No worker consumes the default pool yet: the job stays queued.
    stack.start("run", JOBLEDGER_WORKER__POOL="elsewhere")
    stack.wait_ready()
    with stack.client() as client:
        doomed = submit(client, "echo", {"text": "never"})
        cancelled = client.post(f"/jobs/{doomed['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        later = submit(client, "echo", {"text": "after"})

        stack.start("worker")  # now the queue drains, the cancelled delivery first
        wait_for_status(client, later["id"])
        history = [e["type"] for e in client.get(f"/jobs/{doomed['id']}/events").json()]

    assert history == ["Submitted", "Cancelled"]


def test_cancelling_a_finished_job_is_rejected_with_its_state(running: Stack) -> None:
    with running.client() as client:
        job = submit(client, "echo", {"text": "x"})
        wait_for_status(client, job["id"])
        response = client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 409
    assert response.json()["status"] == "succeeded"


def test_a_failed_job_runs_again_when_retried(running: Stack) -> None:
    with running.client() as client:
        job = submit(client, "fail", {})
        wait_for_status(client, job["id"])
        retried = client.post(f"/jobs/{job['id']}/retry")
        assert retried.status_code == 202 and retried.json()["status"] == "queued"
        eventually(
            lambda: (
                [e["type"] for e in client.get(f"/jobs/{job['id']}/events").json()].count("Failed")
                == 2
            ),
            30,
            "the second attempt to fail",
        )
        done = client.get(f"/jobs/{job['id']}").json()
    assert done["attempt"] == 2 and done["status"] == "failed"


def test_bad_requests_get_a_clear_error_and_change_nothing(running: Stack) -> None:
    with running.client() as client:
        unknown_type = client.post("/jobs", json={"type": "teleport", "case_id": "c", "params": {}})
        bad_params = client.post(
            "/jobs", json={"type": "nap", "case_id": "c", "params": {"seconds": -1}}
        )
        bad_case = client.post("/jobs/bad case!/nap", json={"seconds": 1})
        missing = client.get(f"/jobs/{uuid.uuid4()}")
        malformed = client.get("/jobs/not-a-uuid")
        listed = client.get("/jobs/c/jobs").json()

    assert unknown_type.status_code == 422
    assert "echo" in unknown_type.json()["registered"]
    assert bad_params.status_code == 422
    assert bad_params.json()["detail"][0]["loc"] == ["body", "params", "seconds"]
    assert bad_case.status_code in (404, 422)
    assert missing.status_code == 404
    assert malformed.status_code == 422
    assert listed["items"] == []


def test_a_typed_route_submits_with_the_job_types_own_params(running: Stack) -> None:
    with running.client() as client:
        response = client.post("/jobs/case-9/echo", json={"text": "typed"})
        assert response.status_code == 202, response.text
        done = wait_for_status(client, response.json()["id"])
        invalid = client.post("/jobs/case-9/echo", json={"text": 5})
    assert done["result"] == {"echo": "typed", "attempt": 1}
    assert invalid.status_code == 422


def test_the_same_idempotency_key_submits_once(running: Stack) -> None:
    with running.client() as client:
        key = {"Idempotency-Key": uuid.uuid4().hex}
        body = {"type": "echo", "case_id": "idem", "params": {"text": "once"}}
        first = client.post("/jobs", json=body, headers=key)
        second = client.post("/jobs", json=body, headers=key)
        other = client.post("/jobs", json={**body, "case_id": "other"}, headers=key)
    assert first.json()["id"] == second.json()["id"]
    assert other.status_code == 409


def test_the_case_listing_pages_newest_first_and_filters_by_status(running: Stack) -> None:
    with running.client() as client:
        ids = [submit(client, "echo", {"text": str(i)}, case_id="paged")["id"] for i in range(5)]
        failed = submit(client, "fail", {}, case_id="paged")["id"]
        for job_id in [*ids, failed]:
            wait_for_status(client, job_id)
        position = client.get(f"/jobs/{failed}").headers.get("X-Ledger-Position")
        assert position is None  # reads do not move the ledger

        def page(cursor: str | None = None) -> dict:
            params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
            return client.get("/jobs/paged/jobs", params=params).json()

        eventually(lambda: page()["items"] and page()["items"][0]["status"] == "failed", 10)
        first = page()
        second = page(first["next_cursor"])
        only_failed = client.get("/jobs/paged/jobs", params={"status": "failed"}).json()

    listed = [j["id"] for j in first["items"] + second["items"]]
    assert listed == [failed, *reversed(ids)]
    assert second["next_cursor"] is None
    assert [j["id"] for j in only_failed["items"]] == [failed]
