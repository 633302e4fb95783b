"""OpenTelemetry, configured once per process from Settings (which read the standard
``OTEL_*`` variables).

Tracing off installs nothing: the API stays the no-op it is by default, and the
FastAPI and psycopg instrumentations are not applied. Tracing on installs a
TracerProvider exporting over OTLP (HTTP or gRPC) through a sanitiser, so no query
string, header, exception message or stack trace leaves the process in a span.
Metrics always go to a Prometheus reader (served at /metrics), and over OTLP too
when export is on."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, Status
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from consumers.telemetry import build_spans
from infra.settings import OtelSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("jobledger.telemetry")

# Attributes that may carry a URL (and so a query string with a token in it).
URL_KEYS = {"http.url", "url.full", "http.target", "http.request.uri"}
DROPPED_KEYS = {"url.query", "exception.message", "exception.stacktrace", "db.query.parameter"}
DROPPED_PREFIXES = ("http.request.header.", "http.response.header.", "db.query.parameter.")
# Regexes searched in the whole URL: anchored to the path's end, so a case id that
# merely contains "metrics" is still traced.
# The longest a stopping process waits for its telemetry to be flushed.
SHUTDOWN_FLUSH_S = 2.0
QUIET_PATHS = r"/healthz(\?.*)?$,/readyz(\?.*)?$,/metrics(\?.*)?$"


@dataclass
class Telemetry:
    """What one process installed."""

    tracing: bool = False
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    exporters: list[SpanExporter | MetricExporter] = field(default_factory=list)

    def instrument_app(self, app: FastAPI) -> None:
        if self.tracer_provider is None:
            return
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor  # noqa: PLC0415

        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            excluded_urls=QUIET_PATHS,
            exclude_spans=["receive", "send"],
        )

    def shutdown(self, timeout_s: float = SHUTDOWN_FLUSH_S) -> None:
        """Flush and stop the providers, side by side, for at most ``timeout_s``: with
        the collector down, the OTLP exporters retry for up to ten seconds, which would
        hold up a stopping process (and eat its grace period) for telemetry alone.
        Past the deadline the exporters are stopped, which ends their retries."""
        providers = [p for p in (self.tracer_provider, self.meter_provider) if p is not None]
        flushing = [
            threading.Thread(target=_shutdown, args=(p,), name="telemetry shutdown", daemon=True)
            for p in providers
        ]
        for thread in flushing:
            thread.start()
        deadline = time.monotonic() + timeout_s
        for thread in flushing:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in flushing):
            log.warning("telemetry not flushed within %.0fs: exiting without it", timeout_s)
            for exporter in self.exporters:
                with contextlib.suppress(Exception):
                    exporter.shutdown()
            for thread in flushing:
                thread.join(0.5)


def _shutdown(provider: TracerProvider | MeterProvider) -> None:
    try:
        provider.shutdown()
    except Exception as exc:  # noqa: BLE001 - exiting anyway
        log.warning("telemetry shutdown: %r", exc)


_installed: Telemetry | None = None


def configure(otel: OtelSettings, process: str) -> Telemetry:
    """Install the providers for this process (once; later calls return the first)."""
    global _installed  # noqa: PLW0603 - the SDK's providers are process globals too
    if _installed is not None:
        return _installed
    resource = Resource.create({"service.name": otel.service_name, "jobledger.process": process})
    telemetry = Telemetry()
    telemetry.meter_provider = _meter_provider(otel, resource, telemetry.exporters)
    metrics.set_meter_provider(telemetry.meter_provider)
    if otel.enabled:
        # No shutdown at exit: Telemetry.shutdown flushes, for a bounded time.
        provider = TracerProvider(
            resource=resource, sampler=sampler(otel.sample_ratio), shutdown_on_exit=False
        )
        exporter = SanitisingExporter(_span_exporter(otel))
        telemetry.exporters.append(exporter)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        build_spans()
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor  # noqa: PLC0415

        PsycopgInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
        telemetry.tracing, telemetry.tracer_provider = True, provider
        log.info("tracing to %s over %s", _endpoint(otel) or "the default", otel.protocol)
    _installed = telemetry
    return telemetry


def prometheus_text() -> tuple[bytes, str]:
    """This process's metrics in the Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def sampler(ratio: float) -> Sampler:
    root = ALWAYS_ON if ratio >= 1 else ALWAYS_OFF if ratio <= 0 else TraceIdRatioBased(ratio)
    return NoOrphanQueries(ParentBased(root))


class NoOrphanQueries(Sampler):
    """A database query outside any trace (a heartbeat, the followers' polling) is not
    traced: only queries made for a request or a job are."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if kind is SpanKind.CLIENT and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        return self.inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"NoOrphanQueries{{{self.inner.get_description()}}}"


class SanitisingExporter(SpanExporter):
    """Cleans every span before it leaves the process: URLs lose their query string;
    headers, query parameters, exception messages and stack traces are dropped, and
    so is the status description (it repeats the exception's message)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([sanitise(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def sanitise(span: ReadableSpan) -> ReadableSpan:
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=clean(span.attributes),
        events=[Event(e.name, clean(e.attributes), e.timestamp) for e in span.events],
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def clean(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if key in DROPPED_KEYS or key.startswith(DROPPED_PREFIXES):
            continue
        if key in URL_KEYS and isinstance(value, str):
            cleaned[key] = value.split("?", 1)[0].split("#", 1)[0]
        else:
            cleaned[key] = value
    return cleaned


def _endpoint(otel: OtelSettings) -> str:
    return otel.endpoint.rstrip("/")


def _span_exporter(otel: OtelSettings) -> SpanExporter:
    base = _endpoint(otel)
    if otel.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(endpoint=base or None)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(endpoint=f"{base}/v1/traces" if base else None)


def _metric_exporter(otel: OtelSettings) -> MetricExporter:
    base = _endpoint(otel)
    if otel.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter(endpoint=base or None)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter(endpoint=f"{base}/v1/metrics" if base else None)


def _meter_provider(
    otel: OtelSettings, resource: Resource, exporters: list[SpanExporter | MetricExporter]
) -> MeterProvider:
    readers: list[MetricReader] = [PrometheusMetricReader()]
    if otel.enabled:
        exporter = _metric_exporter(otel)
        exporters.append(exporter)
        readers.append(
            PeriodicExportingMetricReader(
                exporter, export_interval_millis=otel.metrics_export_interval_s * 1000
            )
        )
    # No shutdown at exit: Telemetry.shutdown flushes, for a bounded time.
    return MeterProvider(
        metric_readers=readers, resource=resource, shutdown_on_exit=False, views=HTTP_VIEWS
    )


# The HTTP server's metrics keep only attributes the server chooses: the Host header
# (http.host, http.server_name, net.host.*) is the client's to write, and 2,000
# requests with made-up hosts grew the gateway by 82 MB of time series.
HTTP_SERVER_ATTRIBUTES = frozenset(
    {
        "http.method",
        "http.scheme",
        "http.flavor",
        "http.status_code",
        "http.route",
        "http.request.method",
        "http.response.status_code",
        "url.scheme",
        "network.protocol.version",
        "error.type",
    }
)
HTTP_VIEWS = [View(instrument_name="http.server.*", attribute_keys=set(HTTP_SERVER_ATTRIBUTES))]
