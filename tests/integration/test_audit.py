"""The audit export over real HTTP: a tenant's events as NDJSON in ledger order, its
filters and resume, the scope it needs, and `jobledger audit export`."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest

from gateway.caller import ADMIN, READ, WRITE
from tests.integration.conftest import ROOT, Stack, submit, wait_for_status

# Its tests that take ``running`` keep to jobs, cases and tenants of their own.
pytestmark = pytest.mark.shared_stack


def _export(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    with client.stream("GET", "/audit/events", params=params) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.iter_lines() if line]


def test_the_export_is_the_tenant_s_ledger_in_order_with_filters(running: Stack) -> None:
    case_a, case_b = (f"case-{uuid.uuid4().hex[:8]}" for _ in range(2))
    with running.client() as client, running.client(tenant="another-tenant") as other:
        jobs = [
            submit(client, "echo", {"text": "a"}, case_id=case_a),
            submit(client, "flaky", {"fail_attempts": 1}, case_id=case_b),
            submit(other, "echo", {"text": "theirs"}, case_id=case_a),
        ]
        for job in jobs[:2]:
            wait_for_status(client, job["id"])
        wait_for_status(other, jobs[2]["id"])
        ours = [job["id"] for job in jobs[:2]]

        exported = _export(client)
        positions = [e["position"] for e in exported]
        assert positions == sorted(set(positions))
        assert {e["job_id"] for e in exported} == set(ours)  # not the other tenant's
        for job_id in ours:
            history = client.get(f"/jobs/{job_id}/events").json()
            mine = [e for e in exported if e["job_id"] == job_id]
            assert [e["type"] for e in mine] == [e["type"] for e in history]
            assert [e["at"] for e in mine] == [e["at"] for e in history]
        submitted = next(e for e in exported if e["type"] == "Submitted")
        assert submitted["data"]["params"] == {"text": "a"}  # the auditor sees the params
        assert {"position", "job_id", "case_id", "job_type", "actor", "attempt"} <= set(submitted)

        assert {e["case_id"] for e in _export(client, case_id=case_b)} == {case_b}
        assert {e["job_type"] for e in _export(client, job_type="flaky")} == {"flaky"}
        failed = [e for e in exported if e["type"] == "AttemptFailed"]
        by_worker = _export(client, actor=failed[0]["actor"])
        assert by_worker and {e["actor"] for e in by_worker} == {failed[0]["actor"]}
        middle = exported[len(exported) // 2]
        assert _export(client, since=middle["at"]) == [
            e for e in exported if e["at"] >= middle["at"]
        ]
        assert _export(client, until=middle["at"]) == [
            e for e in exported if e["at"] <= middle["at"]
        ]
        # A resumed export goes on after the last line kept, without gaps or repeats.
        first = _export(client, limit=3)
        rest = _export(client, after=first[-1]["position"])
        assert first + rest == exported

        their_export = _export(other)
        assert {e["job_id"] for e in their_export} == {jobs[2]["id"]}


def test_the_export_holds_the_tenant_s_schedules_histories(running: Stack) -> None:
    """Who made a schedule, changed, paused or deleted it is the tenant's history as
    much as its jobs' is: those events are lines of the export, with the schedule's
    id, in ledger order among the jobs' lines. A case or job type asked for keeps to
    jobs; another tenant's schedules are never in it."""
    tenant = f"schedules-{uuid.uuid4().hex[:8]}"
    body: dict[str, Any] = {"name": "nightly", "cron": "30 2 * * *", "zone": "UTC"}
    body |= {"type": "echo", "case_id": "case-s", "params": {"text": "hi"}}
    with running.client(tenant=tenant) as client, running.client() as other:
        created = client.post("/schedules", json=body)
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        job = submit(client, "echo", {"text": "between"}, case_id="case-s")
        assert client.patch(f"/schedules/{sid}", json={"paused": True}).status_code == 200
        history = client.get(f"/schedules/{sid}").json()["history"]
        assert client.delete(f"/schedules/{sid}").status_code == 204
        wait_for_status(client, job["id"])
        theirs = other.post("/schedules", json={**body, "name": f"theirs-{tenant}"})
        assert theirs.status_code == 201, theirs.text

        exported = _export(client)
        lines = [e for e in exported if e.get("schedule_id") == sid]
        assert [e["type"] for e in lines] == ["Created", "Paused", "Deleted"]
        assert [e["type"] for e in lines[:2]] == [e["type"] for e in history]
        assert [e["at"] for e in lines[:2]] == [e["at"] for e in history]
        assert lines[0]["data"]["cron"] == "30 2 * * *" and lines[0]["actor"]
        assert "job_id" not in lines[0]
        positions = [e["position"] for e in exported]
        assert positions == sorted(set(positions)), "one ledger order, schedules and jobs"
        assert {e.get("schedule_id") for e in exported} == {sid, None}, "only our schedule"
        assert {e.get("job_id") for e in exported} == {job["id"], None}

        by_case = _export(client, case_id="case-s")
        assert by_case and all("job_id" in e for e in by_case)
        by_actor = _export(client, actor=lines[0]["actor"])
        assert {e.get("schedule_id") for e in by_actor} >= {sid}


def test_the_export_needs_the_audit_scope_and_refuses_bad_filters(running: Stack) -> None:
    with running.client(scopes=(READ, WRITE, ADMIN)) as without, running.client() as client:
        refused = without.get("/audit/events")
        assert refused.status_code == 403
        assert "jobs:audit" in refused.json()["detail"]
        for params, field in (
            ({"since": "yesterday"}, "since"),
            ({"until": "2026-12-03"}, "until"),
            ({"case_id": "no spaces"}, "case_id"),
            ({"after": "-1"}, "after"),
            ({"limit": "0"}, "limit"),
        ):
            response = client.get("/audit/events", params=params)
            assert response.status_code == 422, (params, response.text)
            assert response.json()["detail"][0]["loc"] == ["query", field]
        unknown = client.get("/audit/events", params={"tenant": "another-tenant"})
        assert unknown.status_code == 422
        backwards = client.get(
            "/audit/events",
            params={"since": "2026-12-03T10:00:00Z", "until": "2026-12-03T09:00:00Z"},
        )
        assert backwards.status_code == 422
        # Shaped as every other 422 (the documented one): a list, naming the field.
        assert backwards.json()["detail"][0]["loc"] == ["query", "since"]


def test_the_export_command_writes_ndjson(running: Stack) -> None:
    case = f"case-{uuid.uuid4().hex[:8]}"
    with running.client() as client:
        job = submit(client, "echo", {"text": "x"}, case_id=case)
        wait_for_status(client, job["id"])
        over_http = _export(client, case_id=case)
    result = running.cli("audit", "export", "--case", case, "--url", running.url)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == over_http
    refused = running.cli("audit", "export", "--since", "yesterday", "--url", running.url)
    assert refused.returncode == 1 and refused.stderr.startswith("422: ")

    # Piped into a reader that stops early (`| head -1`) while more than a pipe's
    # buffer is still to come: it stops too, quietly.
    many = f"case-{uuid.uuid4().hex[:8]}"
    jobs = [{"type": "echo", "case_id": many, "params": {"text": "y" * 190}} for _ in range(250)]
    with running.client() as client:
        assert client.post("/jobs/batch", json={"jobs": jobs}).status_code == 202
        first = _export(client, case_id=many, limit=1)
    head = subprocess.run(
        f"{sys.executable} -m infra.cli audit export --case {many} --url {running.url} | head -1",
        shell=True,
        cwd=ROOT,
        env=running.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert json.loads(head.stdout) == first[0]
    assert head.stderr == "", head.stderr
