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
from gateway.ops import Ops, check_all

log = logging.getLogger("jobledger.gateway")


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


class WorkerOut(BaseModel):
    worker_id: str
    pool: str
    started_at: datetime
    heartbeat_at: datetime
    in_flight: list[str]


def build_router(ops: Ops) -> APIRouter:
    router = APIRouter(tags=["ops"])

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
        body = Health(status="ok" if ready else "unavailable", checks=checks)
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

    @router.get("/workers", summary="Live workers and the jobs they run", responses=DENIED)
    async def workers(who: Operating) -> list[WorkerOut]:
        if ops.workers is None:
            raise HTTPException(503, "worker liveness is not configured")
        live = await run_in_threadpool(ops.workers)
        return [WorkerOut(**w.__dict__) for w in live]

    return router
