"""Cron schedules through the real stack: two scheduler processes firing a
once-a-second schedule, one of them killed with SIGKILL mid-run and started again;
both frozen (SIGSTOP) and let go together, to race over the same missed ticks;
the ledger then holds exactly one job per tick. A schedule declared in code is
applied by every start and created once. And /schedules' refusals."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import signal
import time
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.utils import get_topic

from client import AsyncClient, NotFound
from domain.job import Job
from domain.ledger import JobLedger
from domain.origin import Origin
from domain.schedule import Schedule, ScheduleNotFound, tick_job_id
from domain.schedule_book import ScheduleBook
from infra import ledger_store
from infra.cli import _param, _parser
from infra.schedule_cli import schedule_command
from infra.settings import PostgresSettings
from infra.verify import verify
from tests.integration.conftest import Stack, eventually


def ticks_fired(book: ScheduleBook, sid: UUID) -> list[Any]:
    return [e for e in book.history(sid) if isinstance(e, Schedule.TickFired)]


def jobs_of(ledger: JobLedger, sid: UUID) -> list[Any]:
    """Every job the schedule's ticks submitted, read from the ledger."""
    topic = get_topic(Job.Submitted)
    found = ledger.recorder.select_notifications(1, 100_000, topics=[topic])
    events: list[Any] = [ledger.mapper.to_domain_event(n) for n in found]
    return [e for e in events if e.correlation_id == f"schedule-{sid}"]


def test_two_schedulers_and_a_kill_9_fire_every_tick_exactly_once(
    stack: Stack, pg: PostgresSettings
) -> None:
    ledger = ledger_store.open_ledger(pg)
    book = ScheduleBook(ledger)
    schedule = book.create(
        tenant="t1",
        name="every-second",
        definition={
            "cron": "* * * * * *",
            "zone": "Europe/Berlin",
            "job_type": "echo",
            "case_id": "case-cron",
            "params": {"text": "tick"},
            "catch_up": "all",
        },
        paused=False,
        origin=Origin("tester"),
    )
    # The app declares a schedule in code too: each scheduler applies it at start.
    # A tick more than a second old counts as missed, so the freeze below misses some.
    fast = {
        "JOBLEDGER_SCHEDULER__INTERVAL_S": "0.2",
        "JOBLEDGER_SCHEDULER__ON_TIME_S": "1",
        "JOBLEDGER_APP": "tests.integration.cron_app",
    }
    first, second = stack.start("scheduler", **fast), stack.start("scheduler", **fast)

    def fired_at_least(n: int) -> bool:
        stack.check_alive()
        return len(ticks_fired(book, schedule.id)) >= n

    def code_fired() -> int:
        try:
            return len(ticks_fired(book, book.find("system", "heartbeat").id))
        except ScheduleNotFound:
            return 0

    eventually(lambda: fired_at_least(3) and code_fired() >= 2, 60, "ticks of both fired")
    # Both frozen, then let go together: each finds the same missed ticks (catch_up
    # all) and they race to fire every one of them.
    for process in (first, second):
        process.send_signal(signal.SIGSTOP)
    frozen_at = len(ticks_fired(book, schedule.id))
    time.sleep(2)  # the ticks missed meanwhile are the point, not a wait for something
    for process in (first, second):
        process.send_signal(signal.SIGCONT)
    eventually(lambda: fired_at_least(frozen_at + 3), 30, "the missed ticks fired")
    time.sleep(0.35)  # somewhere inside a pass (it takes about 0.2 s): not a boundary
    first.send_signal(signal.SIGKILL)
    first.wait()
    stack.processes.remove(first)
    stack.logs.pop(0)
    after_kill = len(ticks_fired(book, schedule.id))
    eventually(lambda: fired_at_least(after_kill + 2), 30, "the survivor fires on")
    stack.start("scheduler", **fast)  # the killed one, back
    eventually(lambda: fired_at_least(after_kill + 4), 30, "both fire again")
    book.change(schedule.id, lambda s: s.pause(Origin("tester")))
    stack.stop_all()

    fired = ticks_fired(book, schedule.id)
    ticks = [e.tick for e in fired]
    assert ticks == sorted(set(ticks)), "a tick recorded twice or out of order"
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ticks)), (
        "catch_up=all: no tick between the first and the last is missing"
    )
    jobs = jobs_of(ledger, schedule.id)
    job_ids = [e.originator_id for e in jobs]
    assert len(job_ids) == len(set(job_ids))
    # Every recorded tick has its job, and no tick has another; a job with no
    # TickFired can only be the one tick submitted as the schedule was paused.
    assert {e.job_id for e in fired} <= set(job_ids)
    assert len(set(job_ids) - {e.job_id for e in fired}) <= 1, "a tick fired two jobs"
    assert [e.job_id for e in fired] == [tick_job_id(schedule.id, t) for t in ticks]
    assert all((e.tenant, e.case_id, e.job_type) == ("t1", "case-cron", "echo") for e in jobs)
    # Declared in code, applied by three starts: created once, by `code`, under the
    # configured tenant and case; its ticks fired once each as well.
    code = book.find("system", "heartbeat")
    assert (code.created_by, code.case_id, code.zone) == ("code", "schedules", "Europe/Berlin")
    assert [type(e).__name__ for e in book.history(code.id)][:2] == ["Created", "TickFired"]
    code_ticks = [e.tick for e in ticks_fired(book, code.id)]
    assert code_ticks == sorted(set(code_ticks)) and len(code_ticks) >= 3
    # catch_up=latest (its default): of the ticks missed while frozen, only the last.
    assert max(b - a for a, b in itertools.pairwise(code_ticks)) >= timedelta(seconds=2), (
        [t.isoformat() for t in code_ticks],
        [t.isoformat() for t in ticks],
    )
    code_jobs = {e.originator_id for e in jobs_of(ledger, code.id)}
    assert {e.job_id for e in ticks_fired(book, code.id)} <= code_jobs
    assert len(code_jobs) <= len(code_ticks) + 1
    # jobledger verify takes the schedule for what it is: chained, not a job's history.
    report = verify(ledger, ledger_store.open_view(pg), pg.conninfo)
    assert (report.schedules, report.jobs) == (2, len(jobs) + len(code_jobs))
    assert report.invalid == {} and report.tampered == {}


def test_schedules_over_rest_and_the_cli(stack: Stack) -> None:
    stack.start("gateway")
    stack.wait_ready()
    body: dict[str, Any] = {"name": "nightly", "cron": "30 2 * * *", "zone": "Europe/Berlin"}
    body |= {"type": "echo", "case_id": "case-7", "params": {"text": "hi"}}
    with stack.client() as client:
        created = client.post("/schedules", json=body)
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        assert created.json()["next_tick"].endswith(("T00:30:00Z", "T01:30:00Z"))
        assert client.post("/schedules", json=body).status_code == 409
        refusals: list[tuple[dict[str, Any], str]] = [
            ({"cron": "61 * * * *"}, "cron"),
            ({"cron": "* * *"}, "cron"),
            ({"zone": "Mars/Olympus"}, "zone"),
            ({"type": "nope"}, "type"),
            ({"params": {"text": 5}}, "params"),
            ({"catch_up": "some"}, "catch_up"),
        ]
        for bad, where in refusals:
            refused = client.post("/schedules", json={**body, "name": "other", **bad})
            assert refused.status_code == 422, (bad, refused.text)
            assert refused.json()["detail"][0]["loc"][1] == where, refused.text
            assert refused.json()["detail"][0]["msg"]
        changed = client.patch(f"/schedules/{sid}", json={"cron": "0 3 * * *", "paused": True})
        assert changed.status_code == 200 and changed.json()["paused"] is True
        assert client.patch(f"/schedules/{sid}", json={"zone": "Nowhere"}).status_code == 422
        history = client.get(f"/schedules/{sid}").json()["history"]
        assert [(e["type"], e["actor"]) for e in history] == [
            ("Created", "tester"),
            ("Changed", "tester"),
            ("Paused", "tester"),
        ]
        assert [s["name"] for s in client.get("/schedules?paused=true").json()["schedules"]] == [
            "nightly"
        ]
        assert client.get("/schedules?paused=false").json()["schedules"] == []
        # The audit export holds the schedule's history, as lines of its own.
        audit = client.get("/audit/events")
        assert audit.status_code == 200, audit.text
        lines = [json.loads(line) for line in audit.text.splitlines()]
        assert [(e["type"], e["schedule_id"]) for e in lines] == [(e["type"], sid) for e in history]
    with stack.client(tenant="other") as stranger:
        assert stranger.get("/audit/events").text == ""
        assert stranger.get(f"/schedules/{sid}").status_code == 404
        assert stranger.get("/schedules").json() == {"schedules": []}
        assert stranger.delete(f"/schedules/{sid}").status_code == 404
    with stack.client(scopes=("jobs:read",)) as reader:
        assert reader.get("/schedules").status_code == 200
        assert reader.delete(f"/schedules/{sid}").status_code == 403

    # The entrypoint once, as a process; then the same command in this process (a
    # CLI process takes seconds to start on a loaded machine), over real HTTP too.
    added = stack.cli(
        "schedule", "add", "hourly", "0 * * * *", "echo", "case-8", "--param", "text=x",
        "--url", stack.url,
    )  # fmt: skip
    assert added.returncode == 0 and "next 20" in added.stdout, added.stderr

    def cli(*args: str) -> tuple[int, str]:
        parsed = _parser().parse_args(["schedule", *args, "--url", stack.url])
        params = dict(_param(p) for p in getattr(parsed, "param", []))
        out = io.StringIO()
        return schedule_command(parsed, stack.token(), params, out), out.getvalue()

    assert cli("pause", "hourly") == (0, "paused hourly\n")
    assert cli("rm", "hourly") == (0, "removed hourly\n")
    code, listed = cli("list")
    assert code == 0 and "nightly" in listed and "paused" in listed and "hourly" not in listed
    assert cli("add", "bad", "* *", "echo", "c")[0] == 1
    with stack.client() as client:
        assert client.delete(f"/schedules/{sid}").status_code == 204
        assert client.get(f"/schedules/{sid}").status_code == 404

    async def through_the_async_client() -> list[str]:
        async with AsyncClient(stack.url, stack.token()) as jobs:
            made = await jobs.add_schedule(
                "weekly", "0 9 * * MON", "echo", "case-9", {"text": "w"}, catch_up="none"
            )
            await jobs.change_schedule(made.id, cron="0 10 * * MON")
            await jobs.pause_schedule(made.id)
            await jobs.resume_schedule(made.id)
            seen = await jobs.get_schedule(made.id)
            assert (seen.cron, seen.catch_up, seen.paused) == ("0 10 * * MON", "none", False)
            assert [s.name for s in await jobs.schedules()] == ["weekly"]
            await jobs.delete_schedule(made.id)
            with pytest.raises(NotFound):
                await jobs.get_schedule(made.id)
            return [e.type for e in seen.history]

    assert asyncio.run(through_the_async_client()) == ["Created", "Changed", "Paused", "Resumed"]
