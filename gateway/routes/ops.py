"""/healthz, /readyz, /metrics and /workers: for operators and orchestrators,
tagged ``ops`` in the OpenAPI document."""

from __future__ import annotations

import logging
from datetime import datetime

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from gateway.access import DENIED, Operating
from gateway.guarded import GuardedRoute
from gateway.ops import Ops, check_all

log = logging.getLogger("jobledger.gateway")


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}
    warnings: dict[str, str] = {}


class WorkerOut(BaseModel):
    worker_id: str
    pool: str
    started_at: datetime
    heartbeat_at: datetime
    in_flight: list[str]
    in_flight_count: int


def build_router(ops: Ops) -> APIRouter:
    router = APIRouter(tags=["ops"], route_class=GuardedRoute)

    @router.get("/healthz", summary="Liveness: the gateway answers")
    async def healthz() -> Health:
        return Health(status="ok")

    @router.get(
        "/readyz",
        summary="Readiness: PostgreSQL and RabbitMQ answer",
        responses={503: {"model": Health, "description": "A dependency is not ready."}},
    )
    async def readyz() -> JSONResponse:
        checks = await check_all(ops)
        ready = all(v == "ok" for v in checks.values())
        warnings: dict[str, str] = {}
        if ops.warnings is not None and ready:
            warnings = await run_in_threadpool(ops.warnings)
        body = Health(status="ok" if ready else "unavailable", checks=checks, warnings=warnings)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @router.get(
        "/metrics",
        summary="This process's metrics, Prometheus text format (jobs:admin)",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}, **DENIED},
    )
    async def metrics(who: Operating) -> Response:
        if ops.metrics is None:
            raise HTTPException(404, "metrics are not configured")
        body, content_type = ops.metrics()
        return Response(body, media_type=content_type)

    @router.get(
        "/workers",
        summary="Live workers, how many jobs each runs, and which of them are the caller's",
        responses=DENIED,
    )
    def workers(who: Operating) -> list[WorkerOut]:
        if ops.workers is None or ops.tenant_of is None:
            raise HTTPException(503, "worker liveness is not configured")
        tenant_of = ops.tenant_of
        return [
            WorkerOut(
                worker_id=w.worker_id,
                pool=w.pool,
                started_at=w.started_at,
                heartbeat_at=w.heartbeat_at,
                in_flight=[j for j in w.in_flight if tenant_of(j) == who.tenant],
                in_flight_count=len(w.in_flight),
            )
            for w in ops.workers()
        ]

    return router
