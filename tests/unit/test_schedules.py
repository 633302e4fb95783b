"""Cron schedules in memory: tick times across DST in a real zone, the catch-up
policies, and the scheduler firing each tick's job exactly once."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from eventsourcing.utils import get_topic
from pydantic import BaseModel

from application import ticks
from application.schedules import Declared, Scheduler, Schedules
from application.submissions import Submissions
from consumers import JobContext, JobRegistry
from domain.errors import InvalidParams, JobNotFound, UnknownJobType
from domain.job import Job
from domain.ledger import JobLedger
from domain.origin import Origin
from domain.schedule import (
    CatchUp,
    Schedule,
    ScheduleDeleted,
    ScheduleExists,
    ScheduleNotFound,
    tick_job_id,
)
from domain.schedule_book import ScheduleBook

BERLIN = ZoneInfo("Europe/Berlin")
registry = JobRegistry()


class Report(BaseModel):
    kind: str = "daily"


@registry.job("report")
async def report(ctx: JobContext, params: Report) -> None:
    pass


def berlin(
    year: int, month: int, day: int, hour: int, minute: int = 0, *, fold: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN, fold=fold).astimezone(UTC)


def local(ticks_utc: list[datetime]) -> list[str]:
    return [t.astimezone(BERLIN).strftime("%H:%M%z") for t in ticks_utc]


# ---- tick times across DST (Europe/Berlin) ----


def test_on_the_spring_forward_day_a_tick_in_the_skipped_hour_fires_once_after_the_gap() -> None:
    day = ticks.ticks_between(
        "30 2 * * *", "Europe/Berlin", berlin(2026, 3, 28, 12), berlin(2026, 3, 30, 12)
    )
    assert local(day) == ["03:00+0200", "02:30+0200"]
    assert day[0] == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_on_the_spring_forward_day_an_interval_skips_the_hour_that_does_not_exist() -> None:
    day = ticks.ticks_between(
        "*/30 * * * *", "Europe/Berlin", berlin(2026, 3, 29, 1, 10), berlin(2026, 3, 29, 3, 40)
    )
    assert local(day) == ["01:30+0100", "03:00+0200", "03:30+0200"]
    assert day[1] - day[0] == timedelta(minutes=30)


def test_on_the_fall_back_day_a_fixed_time_fires_once() -> None:
    day = ticks.ticks_between(
        "30 2 * * *", "Europe/Berlin", berlin(2026, 10, 24, 12), berlin(2026, 10, 25, 12)
    )
    assert local(day) == ["02:30+0200"]


def test_on_the_fall_back_day_an_interval_fires_in_both_repeated_hours_as_two_ticks() -> None:
    day = ticks.ticks_between(
        "*/30 * * * *", "Europe/Berlin", berlin(2026, 10, 25, 1, 10), berlin(2026, 10, 25, 3, 10)
    )
    assert local(day) == [
        "01:30+0200",
        "02:00+0200",
        "02:30+0200",
        "02:00+0100",
        "02:30+0100",
        "03:00+0100",
    ]
    assert all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(day))
    schedule = UUID(int=1)
    assert len({tick_job_id(schedule, t) for t in day}) == len(day)


def test_the_latest_tick_is_found_backwards_across_the_fall_back_hour() -> None:
    now = berlin(2026, 10, 25, 2, 40, fold=1)
    assert local([ticks.latest("*/30 * * * *", "Europe/Berlin", now)]) == ["02:30+0100"]  # type: ignore[list-item]
    assert ticks.latest("* * * * *", "UTC", datetime(2026, 1, 1, tzinfo=UTC)) == datetime(
        2026, 1, 1, tzinfo=UTC
    )


# ---- catch-up policies ----

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


def due(policy: CatchUp, *, down_for_min: int, on_time_s: float = 30) -> list[datetime]:
    return ticks.due(
        "* * * * *",
        "UTC",
        policy,
        after=T0,
        now=T0 + timedelta(minutes=down_for_min, seconds=5),
        on_time_s=on_time_s,
        limit=1000,
    )


def test_catch_up_all_fires_every_missed_tick_oldest_first() -> None:
    assert due(CatchUp.ALL, down_for_min=3) == [T0 + timedelta(minutes=m) for m in (1, 2, 3)]


def test_catch_up_latest_fires_only_the_most_recent_missed_tick() -> None:
    assert due(CatchUp.LATEST, down_for_min=3) == [T0 + timedelta(minutes=3)]


def test_catch_up_none_fires_only_a_tick_that_is_on_time() -> None:
    assert due(CatchUp.NONE, down_for_min=3) == [T0 + timedelta(minutes=3)]  # 5 s late
    assert due(CatchUp.NONE, down_for_min=3, on_time_s=2) == []


def test_every_policy_fires_every_tick_that_is_on_time_even_after_a_slow_pass() -> None:
    for policy in CatchUp:
        fired = ticks.due(
            "* * * * * *", "UTC", policy, after=T0, now=T0 + timedelta(seconds=3.5),
            on_time_s=30, limit=1000,
        )  # fmt: skip
        assert fired == [T0 + timedelta(seconds=s) for s in (1, 2, 3)], policy


def test_every_policy_fires_nothing_before_the_next_tick_and_all_is_bounded() -> None:
    for policy in CatchUp:
        assert due(policy, down_for_min=0) == []
    many = ticks.due(
        "* * * * * *", "UTC", CatchUp.ALL, after=T0, now=T0 + timedelta(hours=1),
        on_time_s=1, limit=50,
    )  # fmt: skip
    assert len(many) == 50 and many[0] == T0 + timedelta(seconds=1)


# ---- the use cases ----


class Index:
    def __init__(self, ledger: JobLedger) -> None:
        self.ledger = ledger

    def ids(self) -> list[UUID]:
        created = get_topic(Schedule.Created)
        found = self.ledger.recorder.select_notifications(1, 10_000, topics=[created])
        return [n.originator_id for n in found]  # type: ignore[misc]


class Stack:
    def __init__(self) -> None:
        self.ledger = JobLedger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        self.book = ScheduleBook(self.ledger)
        self.submissions = Submissions(self.ledger, registry, default_max_attempts=3)
        self.schedules = Schedules(self.book, registry, Index(self.ledger))

    def scheduler(self, **options: Any) -> Scheduler:
        return Scheduler(self.book, Index(self.ledger), self.submissions, **options)

    def add(self, name: str = "nightly", tenant: str = "t1", **fields: Any) -> Schedule:
        definition = {
            "cron": "* * * * *",
            "zone": "UTC",
            "job_type": "report",
            "case_id": "c1",
            "params": {},
            "catch_up": "latest",
            **fields,
        }
        return self.schedules.add(tenant, name, definition, paused=False, origin=Origin("alice"))

    def jobs(self) -> list[Job]:
        topic = get_topic(Job.Submitted)
        found = self.ledger.recorder.select_notifications(1, 10_000, topics=[topic])
        return [self.ledger.get_job(UUID(str(n.originator_id))) for n in found]


@pytest.fixture
def stack() -> Stack:
    return Stack()


def test_a_tick_fired_twice_is_one_job_and_one_tick_fired(stack: Stack) -> None:
    """Two schedulers, or one restarted after dying between the submit and the
    TickFired: the second firing finds the tick's job and records nothing new."""
    schedule = stack.add(catch_up="all")
    now = schedule.since.replace(second=0, microsecond=0) + timedelta(minutes=2, seconds=1)
    first, second = stack.scheduler(), stack.scheduler()
    tick = ticks.due(
        schedule.cron, "UTC", CatchUp.ALL, after=schedule.since, now=now, on_time_s=60, limit=1
    )[0]
    # Died after the submit, before the TickFired: the job is there, the tick is not.
    stack.submissions.submit(
        job_id=tick_job_id(schedule.id, tick),
        tenant="t1",
        case_id="c1",
        job_type="report",
        params={"kind": "daily"},
        origin=Origin(),
    )
    fired = first.fire_due(now)
    assert [f.created for f in fired] == [False, True]
    assert second.fire_due(now) == []
    history = stack.book.history(schedule.id)
    fired_ticks = [e.tick for e in history if isinstance(e, Schedule.TickFired)]
    assert fired_ticks == [f.tick for f in fired]
    assert sorted(j.id for j in stack.jobs()) == sorted(f.job_id for f in fired)


def test_a_stale_scheduler_that_fires_a_recorded_tick_again_records_nothing(stack: Stack) -> None:
    schedule = stack.add()
    tick = schedule.since.replace(second=0, microsecond=0) + timedelta(minutes=1)
    stale = stack.book.get(schedule.id)  # read before the other scheduler fired it
    assert stack.scheduler().fire(stack.book.get(schedule.id), tick) is not None
    again = stack.scheduler().fire(stale, tick)
    assert again is not None and not again.created
    assert sum(isinstance(e, Schedule.TickFired) for e in stack.book.history(schedule.id)) == 1
    assert len(stack.jobs()) == 1


def test_the_tick_job_carries_the_schedules_type_case_params_and_tenant(stack: Stack) -> None:
    schedule = stack.add(params={"kind": "weekly"}, case_id="c9")
    now = schedule.since + timedelta(minutes=1)
    [fired] = stack.scheduler().fire_due(now)
    job = stack.ledger.get_job(fired.job_id)
    assert (job.tenant, job.case_id, job.job_type, job.params) == (
        "t1",
        "c9",
        "report",
        {"kind": "weekly"},
    )
    assert job.submitted_by == "system"


def test_paused_and_deleted_schedules_fire_nothing_and_resume_starts_from_now(
    stack: Stack,
) -> None:
    schedule = stack.add()
    stack.schedules.pause("t1", schedule.id, Origin("bob"))
    later = schedule.since + timedelta(minutes=5)
    assert stack.scheduler().fire_due(later) == []
    resumed = stack.schedules.resume("t1", schedule.id, Origin("bob"))
    assert resumed.since > schedule.since  # ticks while paused are not caught up
    stack.schedules.delete("t1", schedule.id, Origin("carol"))
    assert stack.scheduler().fire_due(later + timedelta(days=1)) == []
    with pytest.raises(ScheduleNotFound):
        stack.schedules.get("t1", schedule.id)
    actors = [(type(e).__name__, e.actor) for e in stack.book.history(schedule.id)]
    assert actors == [
        ("Created", "alice"),
        ("Paused", "bob"),
        ("Resumed", "bob"),
        ("Deleted", "carol"),
    ]


def test_names_are_unique_per_tenant_and_another_tenant_sees_nothing(stack: Stack) -> None:
    schedule = stack.add("nightly", tenant="t1")
    with pytest.raises(ScheduleExists):
        stack.add("nightly", tenant="t1")
    stack.add("nightly", tenant="t2")
    with pytest.raises(ScheduleNotFound):
        stack.schedules.get("t2", schedule.id)
    assert [s.tenant for s in stack.schedules.list("t1")] == ["t1"]
    with pytest.raises(ScheduleNotFound):
        stack.schedules.pause("t2", schedule.id, Origin("mallory"))


def test_a_bad_expression_zone_type_params_or_policy_is_refused(stack: Stack) -> None:
    refusals: list[tuple[dict[str, Any], type[Exception]]] = [
        ({"cron": "61 * * * *"}, ticks.InvalidSchedule),
        ({"cron": "every day"}, ticks.InvalidSchedule),
        ({"zone": "Europe/Atlantis"}, ticks.InvalidSchedule),
        ({"job_type": "nope"}, UnknownJobType),
        ({"params": {"kind": 3, "extra": 1}}, InvalidParams),
        ({"catch_up": "some"}, ticks.InvalidSchedule),
    ]
    for fields, error in refusals:
        with pytest.raises(error):
            stack.add(**fields)
    assert stack.schedules.list("t1") == []


def test_a_change_records_only_what_differs_and_moves_the_start(stack: Stack) -> None:
    schedule = stack.add()
    changed = stack.schedules.change(
        "t1", schedule.id, {"cron": "0 * * * *", "zone": "UTC"}, Origin("bob")
    )
    [event] = [e for e in stack.book.history(schedule.id) if isinstance(e, Schedule.Changed)]
    assert event.changes == {"cron": "0 * * * *"} and event.actor == "bob"
    assert changed.since == event.timestamp
    stack.schedules.delete("t1", schedule.id, Origin("bob"))
    with pytest.raises(ScheduleNotFound):
        stack.schedules.delete("t1", schedule.id, Origin("bob"))
    with pytest.raises(ScheduleDeleted):
        stack.book.get(schedule.id).resume(Origin("bob"))


def test_code_schedules_are_created_changed_or_left_alone(stack: Stack) -> None:
    scheduler = stack.scheduler()

    def apply(cron: str) -> dict[str, str]:
        return scheduler.apply_declared(
            [Declared("report", cron)], tenant="ops", case_id="schedules", schedules=stack.schedules
        )

    assert apply("*/5 * * * *") == {"report": "created"}
    assert apply("*/5 * * * *") == {"report": "unchanged"}
    assert apply("*/10 * * * *") == {"report": "changed"}
    [schedule] = stack.schedules.list("ops")
    assert (schedule.cron, schedule.case_id, schedule.created_by) == (
        "*/10 * * * *",
        "schedules",
        "code",
    )
    assert [type(e).__name__ for e in stack.book.history(schedule.id)] == ["Created", "Changed"]


def test_a_job_type_declares_its_schedule_next_to_it() -> None:
    declared = JobRegistry()

    @declared.job("cleanup", schedule="*/5 * * * *", schedule_zone="Europe/Berlin")
    async def cleanup(ctx: JobContext, params: Report) -> None:
        pass

    @declared.job("plain")
    async def plain(ctx: JobContext, params: Report) -> None:
        pass

    [job_type] = declared.scheduled()
    assert (job_type.name, job_type.schedule, job_type.schedule_zone) == (
        "cleanup",
        "*/5 * * * *",
        "Europe/Berlin",
    )


def test_a_code_schedule_that_cannot_fire_is_refused_and_the_others_applied(
    stack: Stack,
) -> None:
    done = stack.scheduler().apply_declared(
        [Declared("nope", "* * * * *"), Declared("report", "0 * * * *")],
        tenant="ops",
        case_id="s",
        schedules=stack.schedules,
    )
    assert done["nope"].startswith("refused: unknown job type")
    assert done["report"] == "created"
    assert [s.cron for s in stack.schedules.list("ops")] == ["0 * * * *"]
    refused = stack.scheduler().apply_declared(
        [Declared("report", "not cron")], tenant="ops", case_id="s", schedules=stack.schedules
    )
    assert refused["report"].startswith("refused: invalid cron expression")


def test_a_schedules_id_is_no_job_to_the_jobs_reads(stack: Stack) -> None:
    """Schedules share the ledger: GET /jobs/{id} of a schedule's id is a 404, not a
    500 from a Schedule taken for a Job."""
    schedule = stack.add()
    with pytest.raises(JobNotFound):
        stack.ledger.get_job(schedule.id)
    with pytest.raises(JobNotFound):
        stack.ledger.job_history(schedule.id)


def test_a_pass_says_when_the_next_tick_of_any_schedule_is(stack: Stack) -> None:
    stack.add("hourly", cron="0 * * * *")
    stack.add("minutely")
    scheduler = stack.scheduler()
    now = datetime.now(UTC)
    scheduler.fire_due(now)
    assert scheduler.next_tick == now.replace(second=0, microsecond=0) + timedelta(minutes=1)
