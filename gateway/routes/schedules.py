"""/schedules: cron schedules of the caller's tenant. Read with ``jobs:read``, changed
with ``jobs:write``; another tenant's schedule is not found (404). Every change is an
event of the schedule in the ledger, with the token's subject as its actor."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response

from application.schedules import Schedules
from gateway.access import DENIED, Reading, Writing
from gateway.caller import origin_of
from gateway.guarded import GuardedRoute
from gateway.schedule_schemas import (
    ScheduleEventOut,
    ScheduleIn,
    ScheduleList,
    ScheduleOut,
    SchedulePatch,
    ScheduleWithHistory,
)
from gateway.schemas import ErrorOut, InvalidRequestOut

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such schedule (for this tenant)."},
    422: {
        "model": InvalidRequestOut,
        "description": "A bad cron expression, time zone, job type or params.",
    },
}


def build_router(schedules: Schedules) -> APIRouter:
    router = APIRouter(
        prefix="/schedules", tags=["schedules"], responses=DENIED, route_class=GuardedRoute
    )

    @router.post(
        "",
        status_code=201,
        summary="Create a cron schedule",
        responses={**ERRORS, 409: {"model": ErrorOut, "description": "The name is taken."}},
    )
    def create(body: ScheduleIn, request: Request, response: Response, who: Writing) -> ScheduleOut:
        schedule = schedules.add(
            who.tenant,
            body.name,
            body.definition(),
            paused=body.paused,
            origin=origin_of(request, who),
        )
        response.headers["Location"] = f"/schedules/{schedule.id}"
        return ScheduleOut.from_schedule(schedule)

    @router.get("", summary="The tenant's schedules, by name")
    def list_schedules(
        who: Reading,
        paused: Annotated[
            bool | None, Query(description="Only the paused (true) or active (false) ones.")
        ] = None,
    ) -> ScheduleList:
        found = schedules.list(who.tenant)
        if paused is not None:
            found = [s for s in found if s.paused is paused]
        return ScheduleList(schedules=[ScheduleOut.from_schedule(s) for s in found])

    @router.get("/{schedule_id}", summary="A schedule with its history", responses=ERRORS)
    def read(schedule_id: UUID, who: Reading) -> ScheduleWithHistory:
        schedule, history = schedules.history(who.tenant, schedule_id)
        return ScheduleWithHistory(
            **ScheduleOut.from_schedule(schedule).model_dump(),
            history=[ScheduleEventOut.from_event(e) for e in history],
        )

    @router.patch(
        "/{schedule_id}",
        summary="Change, pause or resume a schedule (only the fields given)",
        responses=ERRORS,
    )
    def change(
        schedule_id: UUID, body: SchedulePatch, request: Request, who: Writing
    ) -> ScheduleOut:
        origin = origin_of(request, who)
        schedule = schedules.get(who.tenant, schedule_id)
        changes = body.changes()
        if changes:
            schedule = schedules.change(who.tenant, schedule_id, changes, origin)
        if body.paused is True:
            schedule = schedules.pause(who.tenant, schedule_id, origin)
        elif body.paused is False:
            schedule = schedules.resume(who.tenant, schedule_id, origin)
        return ScheduleOut.from_schedule(schedule)

    @router.delete("/{schedule_id}", status_code=204, summary="Delete a schedule", responses=ERRORS)
    def delete(schedule_id: UUID, request: Request, who: Writing) -> Response:
        schedules.delete(who.tenant, schedule_id, origin_of(request, who))
        return Response(status_code=204)

    return router
