"""/queues: per pool, the work queue's depth and messages in flight (from the broker),
the last hour's rates, queue waits and per-minute series (from the job view), and
how far the projector is behind the ledger. For operators (jobs:admin); the figures
from the view are the caller's tenant's, the broker's are the queue's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from gateway.access import DENIED, Operating
from gateway.guarded import GuardedRoute
from gateway.services import QueuesUnavailable, Services
from projections.figures import MINUTES

RATE_WINDOW_MIN = 5


class PoolOut(BaseModel):
    pool: str
    depth: int | None = Field(description="Messages ready in the pool's queue (all tenants).")
    in_flight: int | None = Field(description="Delivered and not yet acknowledged.")
    consumers: int | None
    submitted_per_min: float = Field(description="The tenant's, over the last 5 minutes.")
    succeeded_per_min: float
    failed_per_min: float
    wait_p50_s: float | None = Field(description="First attempts started in the last hour.")
    wait_p95_s: float | None
    series: dict[str, list[int]] = Field(
        description="Per minute of the last hour, oldest first: submitted, succeeded, "
        "failed, and waiting (jobs waiting for their first attempt at the minute's end)."
    )


class ProjectorOut(BaseModel):
    ledger_position: int
    view_position: int
    behind: int = Field(description="Ledger events the job view has yet to apply.")


class QueuesOut(BaseModel):
    since: datetime = Field(description="The start of the series' first minute.")
    pools: list[PoolOut]
    broker: str = Field(description='"ok", or why the broker\'s figures are missing.')
    projector: ProjectorOut


def build_router() -> APIRouter:
    router = APIRouter(tags=["ops"], responses=DENIED, route_class=GuardedRoute)

    @router.get("/queues", summary="Pools: depth, in flight, rates, waits and the last hour")
    def queues(request: Request, who: Operating) -> QueuesOut:
        services: Services = request.app.state.services
        if services.recent_figures is None:
            raise HTTPException(503, "queue figures are not configured")
        types = {name: services.job_types.get(name).pool for name in services.job_types.names()}
        now = datetime.now(UTC)
        since = now.replace(second=0, microsecond=0) - timedelta(minutes=MINUTES - 1)
        view_position = services.view.max_tracking_id(services.ledger.name) or 0
        ledger_position = services.ledger.recorder.max_notification_id() or 0
        figures = services.recent_figures(who.tenant, since, types)
        broker, depths = "ok", {}
        try:
            if services.queues is None:
                broker = "the broker's management API is not configured"
            else:
                depths = services.queues.depths(sorted(figures))
        except QueuesUnavailable as exc:
            broker = str(exc)
        pools = []
        for pool, f in sorted(figures.items()):
            depth = depths.get(pool)

            def rate(name: str, series: dict[str, list[int]] = f.series) -> float:
                return round(sum(series[name][-RATE_WINDOW_MIN:]) / RATE_WINDOW_MIN, 2)

            pools.append(
                PoolOut(
                    pool=pool,
                    depth=depth.ready if depth else None,
                    in_flight=depth.in_flight if depth else None,
                    consumers=depth.consumers if depth else None,
                    submitted_per_min=rate("submitted"),
                    succeeded_per_min=rate("succeeded"),
                    failed_per_min=rate("failed"),
                    wait_p50_s=f.wait_p50_s,
                    wait_p95_s=f.wait_p95_s,
                    series=f.series,
                )
            )
        return QueuesOut(
            since=since,
            pools=pools,
            broker=broker,
            projector=ProjectorOut(
                ledger_position=ledger_position,
                view_position=view_position,
                behind=max(0, ledger_position - view_position),
            ),
        )

    return router
