"""The gateway's own spans and metrics (through the OpenTelemetry API only: infra
decides whether anything is recorded).

Each ledger append is a span, child of the request's; its context is the
``traceparent`` stored on the events it appends, which the dispatcher and the
worker continue later, in other processes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from opentelemetry import metrics, trace
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from domain.correlation import about

tracer = trace.get_tracer("jobledger.gateway")
meter = metrics.get_meter("jobledger.gateway")
submitted = meter.create_counter(
    "jobledger.jobs.submitted", unit="{job}", description="Jobs accepted, by type"
)
_propagator = TraceContextTextMapPropagator()


_spans = False  # whether a tracer provider is installed: see build_spans()


def build_spans() -> None:
    """Called once a tracer provider is installed: from then on the appends' spans
    are built. Without one, a span is the API's no-op, which still enters and leaves
    a context of its own: a twentieth of the gateway's CPU on a submit."""
    global _spans  # noqa: PLW0603 - the tracer provider it follows is a process global
    _spans = True


@contextmanager
def appending(event: str, job_id: UUID, job_type: str = "") -> Iterator[Span]:
    """A span around appending ``event`` of a job to the ledger."""
    with about(job_id=str(job_id)):
        if not _spans:
            yield trace.INVALID_SPAN
            return
        attributes = {"jobledger.job_id": str(job_id), "jobledger.event": event}
        if job_type:
            attributes["jobledger.job_type"] = job_type
        with tracer.start_as_current_span(f"ledger append {event}", attributes=attributes) as span:
            yield span


def current_traceparent(fallback: str) -> str:
    """The W3C context of the current span, or ``fallback`` when nothing is traced."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent", fallback)


@contextmanager
def appending_batch(jobs: int) -> Iterator[Span]:
    """A span around appending a batch of ``jobs`` submissions in one transaction."""
    if not _spans:
        yield trace.INVALID_SPAN
        return
    attributes: dict[str, str | int] = {
        "jobledger.event": "Submitted",
        "jobledger.batch_size": jobs,
    }
    with tracer.start_as_current_span(
        "ledger append Submitted batch", attributes=attributes
    ) as span:
        yield span
