"""Wire models of /schedules. Domain objects are never serialised directly."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from application import ticks
from domain.schedule import Schedule
from gateway.schemas import CASE_ID, JOB_TYPE

SCHEDULE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
CatchUpName = Literal["all", "latest", "none"]
CRON_HELP = "A cron expression: 5 fields (minute hour day month weekday), or 6 with seconds first."


class ScheduleIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "nightly-report",
                    "cron": "30 2 * * *",
                    "zone": "Europe/Berlin",
                    "type": "segment",
                    "case_id": "case-42",
                    "params": {"scan_id": "s-7"},
                }
            ]
        },
    )

    name: str = Field(pattern=SCHEDULE_NAME, description="Unique within the tenant, for ever.")
    cron: str = Field(max_length=200, description=CRON_HELP)
    zone: str = Field(default="UTC", max_length=64, description="An IANA time zone.")
    type: str = Field(pattern=JOB_TYPE, description="The job type each tick submits.")
    case_id: str = Field(pattern=CASE_ID, description="The case each tick's job works on.")
    params: dict[str, Any] = Field(default_factory=dict, description="The job type's params.")
    catch_up: CatchUpName = Field(
        default="latest",
        description="Ticks missed while no scheduler ran: all of them, the latest, or none.",
    )
    paused: bool = False

    def definition(self) -> dict[str, Any]:
        return {
            "cron": self.cron,
            "zone": self.zone,
            "job_type": self.type,
            "case_id": self.case_id,
            "params": self.params,
            "catch_up": self.catch_up,
        }


class SchedulePatch(BaseModel):
    """Only the fields given change; ``paused`` pauses or resumes."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(default=None, max_length=200, description=CRON_HELP)
    zone: str | None = Field(default=None, max_length=64)
    type: str | None = Field(default=None, pattern=JOB_TYPE)
    case_id: str | None = Field(default=None, pattern=CASE_ID)
    params: dict[str, Any] | None = None
    catch_up: CatchUpName | None = None
    paused: bool | None = None

    def changes(self) -> dict[str, Any]:
        given = self.model_dump(exclude_unset=True, exclude={"paused"})
        if "type" in given:
            given["job_type"] = given.pop("type")
        return {k: v for k, v in given.items() if v is not None}


class ScheduleOut(BaseModel):
    id: UUID
    name: str
    cron: str
    zone: str
    type: str
    case_id: str
    params: dict[str, Any]
    catch_up: str
    paused: bool
    created_by: str
    since: datetime = Field(description="Ticks after this are fired: created, changed, resumed.")
    last_tick: datetime | None
    last_job_id: UUID | None = Field(description="The job the last tick fired.")
    next_tick: datetime | None = Field(description="None while paused.")

    @classmethod
    def from_schedule(cls, schedule: Schedule) -> ScheduleOut:
        next_tick = None
        if not schedule.paused:
            after = max(schedule.after, datetime.now(UTC))
            next_tick = ticks.first_after(schedule.cron, schedule.zone, after)
        return cls(
            id=schedule.id,
            name=schedule.name,
            cron=schedule.cron,
            zone=schedule.zone,
            type=schedule.job_type,
            case_id=schedule.case_id,
            params=schedule.params,
            catch_up=schedule.catch_up,
            paused=schedule.paused,
            created_by=schedule.created_by,
            since=schedule.since,
            last_tick=schedule.last_tick,
            last_job_id=schedule.last_job_id,
            next_tick=next_tick,
        )


class ScheduleEventOut(BaseModel):
    version: int
    type: str
    at: datetime
    actor: str
    correlation_id: str
    data: dict[str, Any]

    @classmethod
    def from_event(cls, event: Any) -> ScheduleEventOut:
        envelope = {"originator_id", "originator_version", "timestamp", "tenant", "actor"}
        envelope |= {"correlation_id", "originator_topic"}
        return cls(
            version=event.originator_version,
            type=type(event).__name__,
            at=event.timestamp,
            actor=event.actor,
            correlation_id=event.correlation_id,
            data={k: v for k, v in vars(event).items() if k not in envelope},
        )


class ScheduleWithHistory(ScheduleOut):
    history: list[ScheduleEventOut] = Field(
        description="Every change and tick fired, oldest first."
    )


class ScheduleList(BaseModel):
    schedules: list[ScheduleOut]
