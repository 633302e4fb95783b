"""Span sanitising, sampling, correlation ids and log lines: pure, no services."""

from __future__ import annotations

import json
import logging
from uuid import uuid4

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import SpanKind

from application.delivery import Delivery
from consumers.telemetry import (
    _observe_in_flight,
    counting_in_flight,
    current_traceparent,
    messaging_span,
)
from domain.correlation import about, accept_or_empty, accept_or_new, bound
from infra import telemetry
from infra.logs import JobIds, JsonFormatter, TextFormatter
from infra.settings import OtelSettings


def traced_spans(sampler_ratio: float = 1.0) -> tuple[TracerProvider, InMemorySpanExporter]:
    exported = InMemorySpanExporter()
    provider = TracerProvider(sampler=telemetry.sampler(sampler_ratio))
    provider.add_span_processor(SimpleSpanProcessor(telemetry.SanitisingExporter(exported)))
    return provider, exported


def test_exported_spans_lose_query_strings_headers_and_exception_text() -> None:
    provider, exported = traced_spans()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "GET /jobs/{job_id}",
        attributes={
            "http.url": "http://h/jobs/1?access_token=SECRET",
            "http.target": "/jobs/1?access_token=SECRET",
            "url.query": "access_token=SECRET",
            "http.request.header.authorization": "Bearer SECRET",
            "jobledger.job_id": "1",
        },
    ) as span:
        span.record_exception(ValueError("patient SECRET"))
        span.set_status(trace.Status(trace.StatusCode.ERROR, "patient SECRET"))

    (sent,) = exported.get_finished_spans()
    assert dict(sent.attributes or {}) == {
        "http.url": "http://h/jobs/1",
        "http.target": "/jobs/1",
        "jobledger.job_id": "1",
    }
    assert sent.events[0].name == "exception"
    assert "exception.message" not in (sent.events[0].attributes or {})
    assert (sent.events[0].attributes or {})["exception.type"] == "ValueError"
    assert sent.status.status_code is trace.StatusCode.ERROR and not sent.status.description


def test_a_query_outside_any_trace_is_not_sampled_but_one_inside_is() -> None:
    provider, exported = traced_spans()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):
        pass
    with (
        tracer.start_as_current_span("consume", kind=SpanKind.CONSUMER),
        tracer.start_as_current_span("INSERT", kind=SpanKind.CLIENT),
    ):
        pass
    assert sorted(s.name for s in exported.get_finished_spans()) == ["INSERT", "consume"]


def test_the_sample_ratio_decides_new_traces() -> None:
    none = telemetry.sampler(0.0).should_sample(None, 1234, "consume", SpanKind.CONSUMER)
    every = telemetry.sampler(1.0).should_sample(None, 1234, "consume", SpanKind.CONSUMER)
    assert none.decision is Decision.DROP and every.decision is Decision.RECORD_AND_SAMPLE


def test_tracing_off_installs_no_sdk_provider() -> None:
    installed = telemetry.configure(OtelSettings(enabled=False), "test")
    assert not installed.tracing and installed.tracer_provider is None
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert telemetry.prometheus_text()[1].startswith("text/plain")


def test_only_well_formed_correlation_ids_are_kept() -> None:
    assert accept_or_new("order-7.a:b_c") == "order-7.a:b_c"
    for hostile in ["a" * 129, "x\ny", "x\x1b[31m", "with space", "café", ""]:
        assert accept_or_new(hostile) != hostile
        assert accept_or_empty(hostile) == ""


def record(message: str) -> logging.LogRecord:
    made = logging.LogRecord("jobledger.worker", logging.INFO, __file__, 1, message, (), None)
    JobIds().filter(made)
    return made


def test_log_lines_carry_the_ids_bound_to_the_work_in_hand() -> None:
    with about(correlation_id="c-1", job_id="j-1", attempt=2):
        text = TextFormatter().format(record("echo attempt 2: succeeded"))
        line = json.loads(JsonFormatter().format(record("echo attempt 2: succeeded")))
    assert bound() == {}
    assert text.endswith("echo attempt 2: succeeded correlation_id=c-1 job_id=j-1 attempt=2")
    assert line["correlation_id"] == "c-1" and line["job_id"] == "j-1" and line["attempt"] == 2
    assert line["message"] == "echo attempt 2: succeeded"


def test_a_text_log_record_stays_on_one_line() -> None:
    text = TextFormatter().format(record("injected\nfake line\x1b[31m"))
    assert "\n" not in text and "\x1b" not in text


def test_with_tracing_off_a_delivery_s_trace_id_is_still_current_for_its_log_lines() -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    delivery = Delivery(
        job_id=uuid4(),
        attempt=1,
        job_type="echo",
        tenant="t",
        case_id="c",
        pool="default",
        traceparent=f"00-{trace_id}-00f067aa0ba902b7-01",
    )

    with messaging_span("consume", SpanKind.CONSUMER, delivery, "q"):
        current = trace.get_current_span().get_span_context()
        line = JsonFormatter().format(record("echo attempt 1: running"))
        passed_on = current_traceparent("")

    assert trace.format_trace_id(current.trace_id) == trace_id
    assert json.loads(line)["trace_id"] == trace_id
    assert passed_on == delivery.traceparent


def test_with_tracing_off_the_dispatcher_passes_a_delivery_s_trace_context_on_as_it_came() -> None:
    """Its publish logs nothing, so the context is not made current; what it sends on
    is the delivery's own ``traceparent`` all the same."""
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    delivery = Delivery(uuid4(), 1, "echo", "t", "c", "default", traceparent=traceparent)

    with messaging_span("publish", SpanKind.PRODUCER, delivery, "x", logs=False) as span:
        span.set_attribute("jobledger.lane", "normal")  # a span's methods, doing nothing
        passed_on = current_traceparent(delivery.traceparent)

    assert passed_on == traceparent
    assert not span.get_span_context().is_valid


def test_jobs_in_flight_are_read_from_each_running_worker_when_collected() -> None:
    def observed() -> list[tuple[float, dict[str, str]]]:
        options = CallbackOptions()
        return [(o.value, dict(o.attributes or {})) for o in _observe_in_flight(options)]

    running = {"job-1": object(), "job-2": object()}
    with counting_in_flight(running, {"worker_id": "w1"}):
        assert observed() == [(2, {"worker_id": "w1"})]
        del running["job-1"]
        assert observed() == [(1, {"worker_id": "w1"})]
    assert observed() == []
