"""POST /jobs/batch: up to 1,000 jobs at once, validated as single submits are, all or
none, in one transaction."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import Stack, eventually, wait_for_status

# Its tests that take ``running`` keep to jobs, cases and tenants of their own.
pytestmark = pytest.mark.shared_stack


def job(n: int, **fields: Any) -> dict[str, Any]:
    return {"type": "echo", "case_id": "batch", "params": {"text": str(n)}, **fields}


def test_a_batch_is_appended_in_one_transaction_and_runs(running: Stack) -> None:
    with running.client() as client:
        response = client.post("/jobs/batch", json={"jobs": [job(n) for n in range(300)]})
        assert response.status_code == 202, response.text
        jobs = response.json()["jobs"]
        assert [j["case_id"] for j in jobs] == ["batch"] * 300 and all(j["created"] for j in jobs)
        for j in jobs[::50]:
            assert wait_for_status(client, j["id"])["status"] == "succeeded"
        listed = client.get(
            "/jobs/batch/jobs",
            params={"limit": 200},
            headers={"X-Ledger-Position": response.headers["X-Ledger-Position"]},
        ).json()
    # Listed at once with the batch's position: the view has all of it.
    assert len(listed["items"]) == 200 and listed["next_cursor"]


def test_a_batch_with_invalid_jobs_names_each_and_appends_none(running: Stack) -> None:
    with running.client() as client:
        before = client.get("/jobs/bad-batch/jobs").json()["items"]
        response = client.post(
            "/jobs/batch",
            json={
                "jobs": [
                    job(0, case_id="bad-batch"),
                    {"type": "teleport", "case_id": "bad-batch", "params": {}},
                    job(2, case_id="bad-batch", params={"text": 3}),
                    job(3, case_id="bad-batch", params={"text": "x", "extra": 1}),
                    job(4, case_id="bad-batch", idempotency_key="k"),
                    job(5, case_id="bad-batch", idempotency_key="k"),
                ]
            },
        )
        after = client.get("/jobs/bad-batch/jobs").json()["items"]
    assert response.status_code == 422
    places = [tuple(d["loc"][:4]) for d in response.json()["detail"]]
    assert places == [
        ("body", "jobs", 1, "type"),
        ("body", "jobs", 2, "params"),
        ("body", "jobs", 3, "params"),
        ("body", "jobs", 5),
    ]
    assert before == after == []


def test_idempotency_keys_are_per_job_and_a_resent_batch_creates_nothing(running: Stack) -> None:
    batch = {"jobs": [job(n, idempotency_key=f"key-{n}", case_id="keyed") for n in range(5)]}
    with running.client() as client:
        first = client.post("/jobs/batch", json=batch).json()["jobs"]
        again = client.post("/jobs/batch", json=batch).json()["jobs"]
        mixed = client.post(
            "/jobs/batch",
            json={
                "jobs": [job(0, idempotency_key="key-0", case_id="keyed"), job(9, case_id="keyed")]
            },
        ).json()["jobs"]
        listed = eventually(lambda: _listed(client, 6), 10, "six jobs listed")
    assert [j["id"] for j in again] == [j["id"] for j in first]
    assert not any(j["created"] for j in again)
    assert mixed[0]["id"] == first[0]["id"] and not mixed[0]["created"] and mixed[1]["created"]
    assert len(listed) == 6


def test_a_batch_counts_against_the_tenants_quota_job_by_job(stack: Stack) -> None:
    stack.start("run", JOBLEDGER_QUOTA__SUBMITS_PER_S="1", JOBLEDGER_QUOTA__BURST="10")
    stack.wait_ready()
    with stack.client() as client:
        ten = client.post("/jobs/batch", json={"jobs": [job(n) for n in range(10)]})
        one_more = client.post("/jobs/batch", json={"jobs": [job(10)]})
    assert ten.status_code == 202
    assert one_more.status_code == 429


def _listed(client: Any, count: int) -> list[dict[str, Any]] | None:
    items: list[dict[str, Any]] = client.get("/jobs/keyed/jobs").json()["items"]
    return items if len(items) == count else None
