"""The consumers' spans and metrics, through the OpenTelemetry API only (infra
decides whether anything is recorded).

Trace context crosses processes as a W3C ``traceparent``: stored on each event
(the context of the span that appended it), carried in the AMQP headers of a
delivery (the context of its publish span), and continued by the span that
consumes it. When nothing is traced the context passes through unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from consumers.delivery import Delivery

tracer = trace.get_tracer("jobledger.consumers")
meter = metrics.get_meter("jobledger.consumers")
_propagator = TraceContextTextMapPropagator()

succeeded = meter.create_counter("jobledger.jobs.succeeded", unit="{job}")
failed = meter.create_counter("jobledger.jobs.failed", unit="{job}", description="Failed for good")
retried = meter.create_counter(
    "jobledger.jobs.retried", unit="{attempt}", description="Failed attempts with a retry due"
)
dead_lettered = meter.create_counter("jobledger.jobs.dead_lettered", unit="{message}")
duration = meter.create_histogram(
    "jobledger.job.duration", unit="s", description="How long an attempt's handler ran"
)
queue_wait = meter.create_histogram(
    "jobledger.job.queue_wait",
    unit="s",
    description="From when an attempt was due (submitted, or its retry time) to its start",
)
in_flight = meter.create_up_down_counter(
    "jobledger.worker.in_flight", unit="{job}", description="Jobs a worker is running"
)


def parent_of(traceparent: str) -> Context | None:
    """The context to continue, from a stored or received ``traceparent``."""
    return _propagator.extract({"traceparent": traceparent}) if traceparent else None


def current_traceparent(fallback: str) -> str:
    """The current span's W3C context, or ``fallback`` when nothing is traced."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent", fallback)


def job_attributes(delivery: Delivery) -> dict[str, Any]:
    """Ids, type and attempt: what a span may say about a job (never its params,
    result or error text)."""
    return {
        "jobledger.job_id": str(delivery.job_id),
        "jobledger.job_type": delivery.job_type,
        "jobledger.attempt": delivery.attempt,
        "jobledger.pool": delivery.pool,
        "jobledger.correlation_id": delivery.correlation_id,
    }


@contextmanager
def messaging_span(
    name: str, kind: SpanKind, delivery: Delivery, destination: str
) -> Iterator[Span]:
    """A publish or consume span continuing the delivery's trace context."""
    attributes = {
        **job_attributes(delivery),
        "messaging.system": "rabbitmq",
        "messaging.destination.name": destination,
        "messaging.message.id": delivery.message_id,
    }
    with tracer.start_as_current_span(
        name, context=parent_of(delivery.traceparent), kind=kind, attributes=attributes
    ) as span:
        yield span
