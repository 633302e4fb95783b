"""``jobledger gateway``: the HTTP API, its live streams and its follower."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator
from functools import partial
from uuid import UUID

import uvicorn
from fastapi import FastAPI

from application.quotas import Quota, TenantQuotas
from application.schedules import Schedules
from application.submissions import Submissions
from domain.errors import JobNotFound
from domain.ledger import JobLedger
from domain.schedule_book import ScheduleBook
from gateway import tracing
from gateway.app import create_app
from gateway.http_server import guarded_protocol
from gateway.ops import LiveWorker, Ops
from gateway.services import Services
from gateway.sse import Streams
from gateway.tokens import bearer_identify
from infra import auth, gateway_sockets, ledger_store, telemetry
from infra.bootstrap import load_registry, names_of, open_ledger, supervise, when_store_is_up
from infra.dead_letters import ManagementDeadLetters, ManagementQueues
from infra.follower import LedgerFollower
from infra.health import probes
from infra.schedule_index import open_schedule_index
from infra.settings import Settings
from infra.shared_quotas import SharedQuotaBook
from infra.streams import PostgresAuditLog, feed_hub, open_streams
from projections.projection import JobView

log = logging.getLogger("jobledger")
# How often, at most, the stream follower reads the ledger while a stream is open.
STREAM_READ_INTERVAL_S = 0.01


def build_gateway(settings: Settings, ledger: JobLedger, streams: Streams | None = None) -> FastAPI:
    registry = load_registry(settings.app)
    view = ledger_store.open_view(settings.postgres)
    services = Services(
        ledger=ledger,
        view=view,
        job_types=registry,
        submissions=Submissions(
            ledger,
            registry,
            settings.retry.max_attempts,
            quotas(settings, view),
            horizon_s=settings.scheduling.horizon_s,
        ),
        identify=bearer_identify(auth.token_verifier(settings.auth, settings.gateway.host)),
        read_your_writes_timeout_s=settings.gateway.read_your_writes_timeout_s,
        dead_letters=ManagementDeadLetters(
            settings.amqp.management_url, settings.amqp.url, names_of(settings).dead_queue
        ),
        max_body_bytes=settings.input.max_body_bytes,
        max_batch_body_bytes=settings.input.max_batch_body_bytes,
        max_header_bytes=settings.input.max_header_bytes,
        body_timeout_s=settings.gateway.body_timeout_s,
        streams=streams,
        audit=PostgresAuditLog(ledger, view),
        queues=ManagementQueues(
            settings.amqp.management_url, settings.amqp.url, names_of(settings)
        ),
        recent_figures=view.recent_figures,
        schedules=Schedules(
            ScheduleBook(ledger), registry, open_schedule_index(settings.postgres, ledger)
        ),
    )
    workers = ledger_store.open_workers(settings.postgres, settings.worker.heartbeat_ttl_s)

    def live_workers() -> list[LiveWorker]:
        return [LiveWorker(**row) for row in workers.live_workers()]

    def warnings() -> dict[str, str]:
        skipped = len(view.unprojectable())
        if not skipped:
            return {}
        return {
            "projection": f"{skipped} ledger events could not be projected and were set "
            "aside (table job_view_unprojectable); the job view goes on without them"
        }

    def tenant_of(job_id: str) -> str | None:
        try:
            return ledger.get_job(UUID(job_id)).tenant
        except (ValueError, JobNotFound):
            return None

    app = create_app(
        services,
        correlation_header=settings.observability.correlation_header,
        trace_url=settings.observability.trace_url,
        operations=Ops(
            probes=probes(settings),
            metrics=telemetry.prometheus_text,
            workers=live_workers,
            tenant_of=tenant_of,
            warnings=warnings,
        ),
    )
    configured = telemetry.configure(settings.otel, "gateway")
    configured.instrument_app(app)
    if configured.tracer_provider is not None:
        tracing.build_spans()
    return app


def quotas(settings: Settings, view: JobView) -> TenantQuotas:
    q = settings.quota
    default = Quota(submits_per_s=q.submits_per_s, burst=q.burst, max_waiting=q.max_waiting)
    per_tenant = {
        tenant: Quota(
            submits_per_s=float(o.get("submits_per_s", q.submits_per_s)),
            burst=int(o.get("burst", q.burst)),
            max_waiting=int(o.get("max_waiting", q.max_waiting)),
        )
        for tenant, o in q.tenants.items()
    }
    # One of several gateway processes shares its quota table with the others.
    return TenantQuotas(default, per_tenant, view.count_waiting, book=SharedQuotaBook.inherited())


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers (the process owns shutdown), and
    without its ten ticks a second: the Date header is renewed every second, as
    uvicorn does, and ``stop`` ends the wait at once."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self.should_exit = True
        self._stop.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def main_loop(self) -> None:
        while not await self.on_tick(0):  # tick 0: the Date header is renewed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._stop.wait()


async def run_gateway(
    settings: Settings,
    stopping: asyncio.Event,
    ready: asyncio.Event | None = None,
    shared: JobLedger | None = None,
) -> None:
    auth.token_verifier(settings.auth, settings.gateway.host)  # a bad key: refused first
    ledger = shared if shared is not None else await open_ledger(settings, stopping)
    if ledger is None:
        return
    streams = await when_store_is_up(
        settings, stopping, partial(open_streams, settings, ledger), "the streams"
    )
    app = await when_store_is_up(
        settings, stopping, partial(build_gateway, settings, ledger, streams), "the job view"
    )
    if streams is None or app is None:
        return
    follower = LedgerFollower(
        ledger,
        settings.postgres.conninfo,
        min_interval_s=STREAM_READ_INTERVAL_S,
        decode_if=streams.hub.listened_to,
        needed_again=streams.hub.subscribed,
    )
    following = asyncio.create_task(
        supervise("stream follower", partial(feed_hub, streams.hub, follower), stopping)
    )
    config = uvicorn.Config(
        app,
        host=settings.gateway.host,
        port=settings.gateway.port,
        log_level="warning",
        # uvicorn's own handlers would bypass the process's log format (JSON lines, job
        # ids); no access log, as a GET may carry its token in the query string.
        log_config=None,
        access_log=False,
        lifespan="off",
        http=guarded_protocol(
            header_timeout_s=settings.gateway.header_timeout_s,
            body_timeout_s=settings.gateway.body_timeout_s,
            max_header_bytes=settings.input.max_header_bytes,
        ),
        timeout_keep_alive=int(max(1, settings.gateway.keep_alive_timeout_s)),
    )
    server = _EmbeddedServer(config)
    serving = asyncio.create_task(server.serve(sockets=gateway_sockets.inherited()))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if serving.done():
        following.cancel()
        await serving  # raises why it could not start
        return
    log.info("gateway listening on http://%s:%s", settings.gateway.host, settings.gateway.port)
    if ready is not None:
        ready.set()
    # Once listening: the listings' SQL module (SQLAlchemy Core: 1.7-2.6 s to import on
    # the busy two-core development machine) is imported now, in a thread, rather than
    # by the first listing a person waits for (the dashboard's first screen).
    warming = (
        asyncio.create_task(asyncio.to_thread(_import_view_queries))
        if settings.gateway.warm_up
        else None
    )
    await stopping.wait()
    streams.hub.close()  # open streams end, so the server can stop
    server.stop()
    await serving
    await following
    if warming is not None:
        await warming


def _import_view_queries() -> None:
    from projections import view_queries  # noqa: PLC0415 - see run_gateway

    view_queries.job_view("", "job_view")
