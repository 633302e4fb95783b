"""Traces over the wire: the real processes export OTLP/HTTP to a receiver in the test
process, and each job's request, append, publish, consume and handler are spans of
one trace, retries included, with nothing of the job's data in them."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as metrics_rpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.integration.conftest import Stack, eventually, submit, wait_for_status
from tests.integration.otlp import OtlpReceiver, ReceivedSpan

SERVER, CONSUMER, PRODUCER = 2, 5, 4  # OTLP span kinds
ERROR = 2  # OTLP status code


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture
def traced(receiver: OtlpReceiver, stack: Stack) -> Stack:
    """Every process in one, exporting spans every 100 ms to the receiver."""
    stack.start(
        "run",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_SERVICE_NAME="jobledger-test",
        OTEL_BSP_SCHEDULE_DELAY="100",
        JOBLEDGER_OTEL__METRICS_EXPORT_INTERVAL_S="0.5",
    )
    stack.wait_ready()
    return stack


def one(spans: list[ReceivedSpan], name: str, **attributes: Any) -> ReceivedSpan:
    found = [
        s
        for s in spans
        if s.name == name and all(s.attributes.get(k) == v for k, v in attributes.items())
    ]
    assert len(found) == 1, f"{len(found)} spans {name} {attributes} in {[s.name for s in spans]}"
    return found[0]


def spans_of_job(receiver: OtlpReceiver, job_id: str, names: set[str]) -> list[ReceivedSpan]:
    """Wait until every span named in ``names`` has arrived for the job."""

    def arrived() -> list[ReceivedSpan] | None:
        spans = [s for s in receiver.received() if s.attributes.get("jobledger.job_id") == job_id]
        return spans if names <= {s.name for s in spans} else None

    return eventually(arrived, 20, f"spans {names} of job {job_id}")


def test_a_job_is_one_trace_from_the_callers_request_to_its_handler(
    traced: Stack, receiver: OtlpReceiver
) -> None:
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    headers = {"traceparent": f"00-{trace_id}-{caller_span}-01", "X-Correlation-ID": "corr-42"}
    with traced.client() as client:
        response = client.post(
            "/jobs",
            json={"type": "echo", "case_id": "case-1", "params": {"text": "hi"}},
            headers=headers,
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        wait_for_status(client, job_id)
        submitted = client.get(f"/jobs/{job_id}/events").json()[0]

    spans_of_job(receiver, job_id, {"ledger append Submitted", "publish", "consume", "run echo"})
    spans = receiver.of_trace(trace_id)
    server = one(spans, "POST /jobs", **{"jobledger.correlation_id": "corr-42"})
    append = one(spans, "ledger append Submitted")
    publish = one(spans, "publish", **{"jobledger.attempt": 1})
    consume = one(spans, "consume", **{"jobledger.attempt": 1})
    run = one(spans, "run echo")

    assert server.kind == SERVER and server.parent_id == caller_span
    assert append.parent_id == server.span_id
    assert submitted["traceparent"] == f"00-{trace_id}-{append.span_id}-01"
    assert publish.parent_id == append.span_id and publish.kind == PRODUCER
    assert consume.parent_id == publish.span_id and consume.kind == CONSUMER
    assert run.parent_id == consume.span_id
    assert run.attributes["jobledger.outcome"] == "succeeded"
    assert consume.attributes["jobledger.correlation_id"] == "corr-42"
    assert {s.service for s in (server, publish, consume)} == {"jobledger-test"}
    queries = [s for s in spans if s.attributes.get("db.system") == "postgresql"]
    assert queries, "psycopg's queries for the job are spans of its trace"


def test_the_attempts_of_a_retried_job_are_spans_of_its_trace(
    traced: Stack, receiver: OtlpReceiver
) -> None:
    with traced.client() as client:
        job = submit(client, "flaky", {"fail_attempts": 1})
        done = wait_for_status(client, job["id"])
    assert done["status"] == "succeeded" and done["attempt"] == 2

    spans = spans_of_job(receiver, job["id"], {"ledger append Submitted", "run flaky"})
    spans = eventually(
        lambda: (
            (
                s := [
                    x
                    for x in receiver.received()
                    if x.attributes.get("jobledger.job_id") == job["id"]
                ]
            )
            # A consume span ends after its run span: it may come in a later export.
            and all(
                len([x for x in s if x.name == name]) == 2
                for name in ("publish", "consume", "run flaky")
            )
            and s
        ),
        20,
        "both attempts' spans",
    )
    trace_ids = {s.trace_id for s in spans}
    assert len(trace_ids) == 1, trace_ids
    server = one(receiver.of_trace(trace_ids.pop()), "POST /jobs")
    append = one(spans, "ledger append Submitted")
    assert append.parent_id == server.span_id
    first = {name: one(spans, name, **{"jobledger.attempt": 1}) for name in ("publish", "consume")}
    second = {name: one(spans, name, **{"jobledger.attempt": 2}) for name in ("publish", "consume")}
    run_1 = one(spans, "run flaky", **{"jobledger.attempt": 1})
    run_2 = one(spans, "run flaky", **{"jobledger.attempt": 2})

    assert first["publish"].parent_id == append.span_id
    assert first["consume"].parent_id == first["publish"].span_id
    assert run_1.parent_id == first["consume"].span_id and run_1.status_code == ERROR
    # The failed attempt was recorded inside its consume span; the retry continues it.
    assert second["publish"].parent_id == first["consume"].span_id
    assert second["consume"].parent_id == second["publish"].span_id
    assert run_2.parent_id == second["consume"].span_id
    assert run_2.attributes["jobledger.outcome"] == "succeeded"


def test_no_params_results_errors_or_tokens_reach_any_exported_span(
    traced: Stack, receiver: OtlpReceiver
) -> None:
    param_marker = f"PARAM{secrets.token_hex(6)}"
    error_marker = f"ERROR{secrets.token_hex(6)}"
    token_marker = f"TOKEN{secrets.token_hex(6)}"
    with traced.client() as client:
        echoed = submit(client, "echo", {"text": param_marker})
        failed = submit(client, "fail", {"message": error_marker, "permanent": False})
        wait_for_status(client, echoed["id"])
        wait_for_status(client, failed["id"])
        read = client.get(
            f"/jobs/{echoed['id']}",
            params={"access_token": token_marker},
            headers={"X-Correlation-ID": "the-read-with-a-token"},
        )
        assert read.status_code == 200 and param_marker in read.text  # the API does answer it

    spans_of_job(receiver, echoed["id"], {"run echo"})
    spans_of_job(receiver, failed["id"], {"run fail"})
    read_span = eventually(
        lambda: next(
            (
                s
                for s in receiver.received()
                if s.attributes.get("jobledger.correlation_id") == "the-read-with-a-token"
            ),
            None,
        ),
        20,
        "the read's span",
    )
    urls = [v for k, v in read_span.attributes.items() if k in ("http.url", "url.full")]
    assert urls and all(u.endswith(f"/jobs/{echoed['id']}") for u in urls), urls

    everything = repr(
        [(s.name, s.attributes, s.events, s.status_message) for s in receiver.received()]
    )
    for marker in (param_marker, error_marker, token_marker):
        assert marker not in everything, f"{marker} leaked into a span"


def test_spans_are_exported_over_grpc_too(stack: Stack) -> None:
    names: list[str] = []

    class Traces(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            names.extend(
                s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans
            )
            return trace_service_pb2.ExportTraceServiceResponse()

    class Metrics(metrics_rpc.MetricsServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            return metrics_service_pb2.ExportMetricsServiceResponse()

    server = grpc.server(ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    metrics_rpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        stack.start(
            "run",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        stack.wait_ready()
        with stack.client() as client:
            wait_for_status(client, submit(client, "echo", {"text": "x"})["id"])
        eventually(lambda: {"POST /jobs", "consume", "run echo"} <= set(names), 20, "gRPC spans")
    finally:
        stack.stop_all()
        server.stop(0)


def test_a_process_stops_promptly_when_the_collector_is_unreachable(stack: Stack) -> None:
    process = stack.start(
        "run",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:1",  # refuses every connection
        OTEL_EXPORTER_OTLP_TIMEOUT="30",  # the exporters would retry for this long
        JOBLEDGER_OTEL__METRICS_EXPORT_INTERVAL_S="0.5",
    )
    stack.wait_ready()
    with stack.client() as client:
        wait_for_status(client, submit(client, "echo", {"text": "x"})["id"])

    began = time.monotonic()
    assert stack.stop(process) == 0
    assert time.monotonic() - began < 10, "telemetry held the stop up"
