"""The consumers' spans and metrics, through the OpenTelemetry API only (infra
decides whether anything is recorded).

Trace context crosses processes as a W3C ``traceparent``: stored on each event
(the context of the span that appended it), carried in the AMQP headers of a
delivery (the context of its publish span), and continued by the span that
consumes it. When nothing is traced the context passes through unchanged."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sized
from contextlib import contextmanager
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from application.delivery import DUE_AT_HEADER, Delivery
from domain.job import Job, Status

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
# Each running worker's jobs, read when the metrics are collected rather than
# counted up and down per job (two measurements a job, each a few microseconds).
_running: dict[object, tuple[Sized, dict[str, str]]] = {}


def _observe_in_flight(options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(len(jobs), attributes) for jobs, attributes in list(_running.values())]


meter.create_observable_up_down_counter(
    "jobledger.worker.in_flight",
    [_observe_in_flight],
    unit="{job}",
    description="Jobs a worker is running",
)


@contextmanager
def counting_in_flight(jobs: Sized, attributes: dict[str, str]) -> Iterator[None]:
    """While inside, ``len(jobs)`` is reported as a worker's jobs in flight."""
    key = object()
    _running[key] = (jobs, attributes)
    try:
        yield
    finally:
        del _running[key]


_spans = False  # whether a tracer provider is installed: see build_spans()


def build_spans() -> None:
    """Called once a tracer provider is installed: from then on the messaging spans
    are built. (Asking the API instead costs an environment lookup per message while
    none is, a tenth of the dispatcher's CPU.)"""
    global _spans  # noqa: PLW0603 - the tracer provider it follows is a process global
    _spans = True


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
    name: str, kind: SpanKind, delivery: Delivery, destination: str, *, logs: bool = True
) -> Iterator[Span]:
    """A publish or consume span continuing the delivery's trace context. With
    tracing off, no span is built (its attributes and the no-op machinery cost a
    tenth of the dispatcher's CPU), but the delivery's context is made current all
    the same, so that log lines carry its trace id; unless no line is logged within
    (``logs=False``: the dispatcher's publish, where parsing the context and making it
    current was a sixth of the dispatcher's CPU)."""
    if not _spans and not logs:
        yield trace.INVALID_SPAN
        return
    if not _spans:
        parent = trace.get_current_span(parent_of(delivery.traceparent))
        continued = trace.NonRecordingSpan(parent.get_span_context())
        with trace.use_span(continued, end_on_exit=False):
            yield continued
        return
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


def run_attributes(job: Job, run_in: str) -> dict[str, Any]:
    """The attributes of a handler's run span (ids, type, attempt: never params)."""
    return {
        "jobledger.job_id": str(job.id),
        "jobledger.job_type": job.job_type,
        "jobledger.attempt": job.attempt,
        "jobledger.run_in": run_in,
    }


def count_outcome(job: Job) -> None:
    by_type = {"job_type": job.job_type}
    match job.status:
        case Status.SUCCEEDED:
            succeeded.add(1, by_type)
        case Status.FAILED:
            failed.add(1, by_type)
        case Status.RETRY_SCHEDULED if job.error is not None:
            retried.add(1, by_type)


def observe_queue_wait(message: AbstractIncomingMessage, job_type: str) -> None:
    """From when the attempt was due (the dispatcher's publish plus its delay) to now."""
    due_ms = (message.headers or {}).get(DUE_AT_HEADER)
    if isinstance(due_ms, int) and not isinstance(due_ms, bool):
        queue_wait.record(max(0.0, time.time() - due_ms / 1e3), {"job_type": job_type})
