"""The dashboard in a real browser against the real stack: one headless Chromium
session signs in, watches jobs appear and change state live, reads a failed job's
traceback, retries and cancels from the page, re-drives dead letters and opens the
queues page, never seeing another tenant's jobs. Screenshots of each page go to the
test's directory (and to $DASHBOARD_SCREENSHOTS when set: docs/dashboard
holds the README's)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx

from gateway.caller import READ
from tests.integration.browser import Browser
from tests.integration.conftest import Stack, eventually, submit, wait_for_status

OTHER = "other-clinic"
API_TENANT = "api-clinic"


def history(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = client.get(f"/jobs/{job_id}/events").json()
    return events


def row(job_id: str, attribute: str = "status") -> str:
    """JS: the jobs table's row of a job, its data-<attribute> (or null)."""
    return (
        f"((document.querySelector('#job-rows tr[data-job-id=\"{job_id}\"]') || "
        f"{{dataset: {{}}}}).dataset.{attribute} || null)"
    )


def shoot(browser: Browser, tmp_path: Path, name: str) -> None:
    shot = browser.screenshot(tmp_path / f"dashboard-{name}.png")
    wanted = os.environ.get("DASHBOARD_SCREENSHOTS")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(wanted) / shot.name)


TRACE = "0af7651916cd43dd8448eb211c80319c"


def test_the_dashboard_follows_the_tenants_jobs_live_and_acts_on_them_through_its_api(
    stack: Stack, tmp_path: Path
) -> None:
    stack.start("run", JOBLEDGER_OBSERVABILITY__TRACE_URL="http://traces.test/trace/{trace_id}")
    stack.wait_ready()
    running = stack
    with (
        running.client() as client,
        running.client(tenant=OTHER, subject="someone-else") as other,
    ):
        _follow_and_act(running, client, other, tmp_path)
    check_the_api(running)  # on the same stack: one start less


def _follow_and_act(
    running: Stack, client: httpx.Client, other: httpx.Client, tmp_path: Path
) -> None:
    hidden = [submit(other, "echo", {"text": "not yours"}, case_id="case-x")["id"]]
    done = submit(client, "echo", {"text": "before the page"}, case_id="case-0")
    wait_for_status(client, done["id"])

    browser = Browser(tmp_path / "profile")
    try:
        # Signing in from the URL: the token is kept in the tab and leaves the URL.
        token = running.token()
        browser.goto(f"{running.url}/dashboard?access_token={token}#/jobs")
        browser.wait_for("document.body.dataset.stream === 'open'", 30, "the live stream")
        assert browser.evaluate("location.href") == f"{running.url}/dashboard#/jobs"
        assert browser.evaluate("sessionStorage.getItem('jobledger.token')") == token
        assert browser.evaluate(row(done["id"])) == "succeeded"
        browser.evaluate("window.notReloaded = true")

        # Rows appear and change state live, without a reload.
        napping = submit(client, "nap", {"seconds": 1.5}, case_id="case-1")
        answer = client.post(
            "/jobs",
            json={
                "type": "fail",
                "case_id": "case-1",
                "params": {"message": "the scan is unreadable"},
            },
            headers={"traceparent": f"00-{TRACE}-b7ad6b7169203331-01"},
        )
        failing = answer.json()
        hidden.append(submit(other, "echo", {"text": "still not yours"}, case_id="case-1")["id"])
        browser.wait_for(f"{row(napping['id'])} === 'running'", 30, "the nap to run")
        browser.wait_for(f"{row(napping['id'])} === 'succeeded'", 30, "the nap to succeed")
        browser.wait_for(f"{row(failing['id'])} === 'failed'", 30, "the failure")
        assert browser.evaluate("window.notReloaded") is True
        shoot(browser, tmp_path, "jobs")

        # A failed job's page: its traceback, then Retry (the actor is the subject).
        browser.evaluate(f"location.hash = '#/job/{failing['id']}'")
        browser.wait_for("!!document.querySelector('pre.traceback')", 20, "the traceback")
        traceback = browser.evaluate("document.querySelector('pre.traceback').textContent")
        assert "PermanentError: the scan is unreadable" in traceback
        links = browser.evaluate("[...document.querySelectorAll('a.trace')].map(a => a.href)")
        assert f"http://traces.test/trace/{TRACE}" in links, links
        shoot(browser, tmp_path, "job")
        browser.click("#retry")
        browser.wait_for(
            "!!document.querySelector('#timeline li[data-type=\"RetryRequested\"]')",
            20,
            "the retry in the timeline",
        )
        retried = [e for e in history(client, failing["id"]) if e["type"] == "RetryRequested"]
        assert [e["actor"] for e in retried] == ["tester"]

        # Cancel a running job from its page.
        spinning = submit(client, "spin", {"seconds": 20}, case_id="case-2")
        browser.evaluate(f"location.hash = '#/job/{spinning['id']}'")
        browser.wait_for("document.body.dataset.job === 'running'", 30, "the spin to run")
        browser.click("#cancel")
        browser.wait_for("document.body.dataset.job === 'cancelled'", 30, "the cancel")
        assert wait_for_status(client, spinning["id"])["status"] == "cancelled"

        # Dead letters: one re-driven by its button, two as a selection.
        dead = [submit(client, "fail", {"message": f"dead {n}"})["id"] for n in range(3)]
        for job_id in dead:
            wait_for_status(client, job_id)
        eventually(
            lambda: {d["job_id"] for d in client.get("/dlq").json()} >= set(dead),
            20,
            "the dead letters",
        )
        browser.evaluate("location.hash = '#/dlq'")
        browser.wait_for(
            f"!!document.querySelector('#dead tr[data-job-id=\"{dead[2]}\"]')", 20, "the DLQ page"
        )
        shoot(browser, tmp_path, "dlq")
        browser.click(f'#dead tr[data-job-id="{dead[0]}"] button.redrive')
        browser.wait_for(
            "!!document.querySelector('#redrive-outcome [data-outcome=\"retried\"]')", 20
        )
        for job_id in dead[1:]:
            browser.evaluate(
                f"document.querySelector('#dead tr[data-job-id=\"{job_id}\"] input.pick')"
                ".checked = true"
            )
        browser.click("#redrive-selected")
        browser.wait_for(
            "document.querySelectorAll('#redrive-outcome [data-outcome=\"retried\"]').length === 2",
            20,
        )
        for job_id in dead:
            actors = [e["actor"] for e in history(client, job_id) if e["type"] == "RetryRequested"]
            assert actors == ["tester"], (job_id, actors)

        # Queues and workers.
        browser.evaluate("location.hash = '#/queues'")
        browser.wait_for("document.body.dataset.queues === 'loaded'", 20, "the queues page")
        assert browser.evaluate("!!document.querySelector('#pools tr[data-pool=\"default\"]')")
        assert browser.evaluate("document.querySelectorAll('#workers tbody tr').length") >= 1
        assert browser.evaluate("document.querySelectorAll('svg.spark').length") >= 4
        shoot(browser, tmp_path, "queues")

        # Filtered on failures: a job that fails later joins the list, live.
        browser.evaluate("location.hash = '#/jobs?status=failed'")
        browser.wait_for("document.body.dataset.stream === 'open'", 20)
        late = submit(client, "fail", {"message": "late"}, case_id="case-3")
        browser.wait_for(f"{row(late['id'])} === 'failed'", 30, "the late failure")
        assert browser.evaluate(row(done["id"])) is None  # succeeded: not listed
        assert browser.evaluate(row(napping["id"])) is None

        # Back to the jobs: the other tenant's jobs never appeared anywhere.
        browser.evaluate("location.hash = '#/jobs'")
        browser.wait_for("document.body.dataset.stream === 'open'", 20)
        page = browser.evaluate("document.documentElement.outerHTML")
        for job_id in hidden:
            assert job_id not in page and job_id[:8] not in page
        assert browser.evaluate("window.notReloaded") is True

        # Signing out forgets the token; a pasted one signs in again.
        browser.click("#sign-out")
        browser.wait_for("document.body.dataset.view === 'signin'", 10, "the sign-in screen")
        assert browser.evaluate("sessionStorage.getItem('jobledger.token')") is None
        shoot(browser, tmp_path, "signin")
        browser.evaluate(f"document.getElementById('token').value = {json.dumps(token)}")
        browser.click("#signin-form button")
        browser.wait_for("document.body.dataset.stream === 'open'", 20, "the jobs again")
        assert browser.evaluate(row(done["id"])) == "succeeded"
        assert browser.evaluate("location.href") == f"{running.url}/dashboard#/jobs"
    finally:
        browser.close()


def check_the_api(running: Stack) -> None:
    """The routes the page reads: the tenant's listing, filtered and scoped, the re-drive
    and the queues' figures, guarded; the page's own headers. A tenant of its own, so
    the browser's jobs are not in its figures."""
    with (
        running.client(tenant=API_TENANT) as client,
        running.client(tenant=OTHER) as other,
        running.client(tenant=API_TENANT, scopes=(READ,)) as reader,
    ):
        mine = [submit(client, "echo", {"text": str(n)}, case_id=f"case-{n % 2}") for n in range(4)]
        failed = submit(client, "fail", {}, case_id="case-9")
        theirs = submit(other, "fail", {}, case_id="case-9")
        for job in (*mine, failed):
            wait_for_status(client, job["id"])
        wait_for_status(other, theirs["id"])

        def listed(**query: str) -> list[str]:
            page = client.get("/jobs", params=query)
            assert page.status_code == 200, page.text
            assert int(page.headers["X-View-Position"]) > 0
            return [j["id"] for j in page.json()["items"]]

        # wait_for_status read the ledger; the listing reads the view, which follows it:
        # wait until the view has the failure too (every submit is before it), not only
        # the five jobs.
        eventually(lambda: listed(status="failed") == [failed["id"]], 10)
        everything = eventually(lambda: (ids := listed()) and len(ids) == 5 and ids, 10)
        assert everything == [failed["id"], *[j["id"] for j in reversed(mine)]]
        assert listed(case_id="case-1") == [mine[3]["id"], mine[1]["id"]]
        assert listed(status="failed") == [failed["id"]]
        assert listed(type="fail", case_id="case-9") == [failed["id"]]
        assert listed(since=mine[2]["submitted_at"], until=mine[3]["submitted_at"]) == [
            mine[3]["id"],
            mine[2]["id"],
        ]
        first = client.get("/jobs", params={"limit": 2}).json()
        rest = client.get("/jobs", params={"limit": 10, "cursor": first["next_cursor"]}).json()
        assert [j["id"] for j in first["items"] + rest["items"]] == everything
        assert client.get("/jobs", params={"status": "bogus"}).status_code == 422
        assert client.get("/jobs", params={"since": "yesterday"}).status_code == 422

        figures = client.get("/queues").json()
        [pool] = [p for p in figures["pools"] if p["pool"] == "default"]
        assert sum(pool["series"]["submitted"]) == 5
        assert sum(pool["series"]["failed"]) == 1
        assert pool["wait_p50_s"] is not None
        assert figures["broker"] == "ok" and pool["depth"] is not None  # the broker's counts lag

        # Re-driving: another tenant's job is not found, a queued or done job refused.
        answer = client.post(
            "/dlq/redrive", json={"job_ids": [theirs["id"], mine[0]["id"], failed["id"]]}
        )
        assert answer.status_code == 200, answer.text
        outcomes = {r["job_id"]: r["outcome"] for r in answer.json()}
        assert outcomes == {
            theirs["id"]: "not_found",
            mine[0]["id"]: "refused",
            failed["id"]: "retried",
        }
        assert [e["type"] for e in history(other, theirs["id"])][-1] == "Failed"
        assert client.post("/dlq/redrive", json={"job_ids": []}).status_code == 422
        assert reader.post("/dlq/redrive", json={"job_ids": [failed["id"]]}).status_code == 403
        assert reader.get("/queues").status_code == 403

        # The page itself: no token needed to load it, a strict policy on it.
        page = httpx.get(f"{running.url}/dashboard")
        assert page.status_code == 200
        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert page.headers["Referrer-Policy"] == "no-referrer"
        assert "<script>" not in page.text and "style=" not in page.text
        assert httpx.get(f"{running.url}/dashboard/app.js").status_code == 200
        assert httpx.get(f"{running.url}/dashboard/other.js").status_code == 404
        assert json.loads(client.get("/openapi.json").text)["paths"]["/jobs"]["get"]


# Holds the job page's read of a job's history until ``window.releaseHistory()``.
HOLD_HISTORY = """
(function () {
  var release, held = new Promise(function (r) { release = r; });
  var original = window.fetch;
  window.releaseHistory = function () { release(); };
  window.fetch = function (url) {
    var args = arguments;
    if (String(url).endsWith("/events")) {
      return held.then(function () { return original.apply(window, args); });
    }
    return original.apply(window, args);
  };
})()
"""


def test_a_job_page_shows_the_status_its_history_reached_when_its_two_reads_disagree(
    stack: Stack, tmp_path: Path
) -> None:
    """The job page reads the job and its history in two requests, and a job can start
    between their answers: read as waiting, with a history that has its start. The
    page then showed the waiting status until the job's next event (here, its end)."""
    stack.start("run")
    stack.wait_ready()
    with stack.client() as client:
        _watch_a_job_start_between_the_pages_two_reads(stack, client, tmp_path)


def _watch_a_job_start_between_the_pages_two_reads(
    stack: Stack, client: httpx.Client, tmp_path: Path
) -> None:
    browser = Browser(tmp_path / "profile")
    try:
        browser.goto(f"{stack.url}/dashboard?access_token={stack.token()}#/jobs")
        browser.wait_for("document.body.dataset.stream === 'open'", 30, "the live stream")
        answer = client.post(
            "/jobs",
            json={  # a job with no progress events: nothing after its start until its end
                "type": "linger",
                "case_id": "case-1",
                "params": {"seconds": 6, "pid_dir": str(tmp_path)},
                "delay_s": 3,
            },
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        browser.evaluate(HOLD_HISTORY)
        browser.evaluate(f"location.hash = '#/job/{job_id}'")
        eventually(
            lambda: client.get(f"/jobs/{job_id}").json()["status"] == "running", 30, "the start"
        )
        assert browser.evaluate("document.body.dataset.job || null") is None  # still loading
        browser.evaluate("window.releaseHistory()")
        browser.wait_for("document.body.dataset.job === 'running'", 4, "the page to say running")
        browser.wait_for("document.body.dataset.job === 'succeeded'", 30, "the job to end")
    finally:
        browser.close()
