"""Correlation ids, logs, metrics and the operations endpoints, over real HTTP
against the real processes."""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import (
    Stack,
    eventually,
    free_port,
    start_workers,
    submit,
    wait_for_status,
)
from tests.integration.otlp import OtlpReceiver

GENERATED = re.compile(r"[0-9a-f]{32}")


def raw_request(
    stack: Stack, path: str, extra_header: bytes, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """A GET (a POST with ``body``) with a header no well-behaved client would send,
    over a plain socket."""
    host, port = stack.url.removeprefix("http://").split(":")
    headers = b"".join(f"{k}: {v}\r\n".encode() for k, v in stack.auth_headers().items())
    if body:
        headers += b"Content-Type: application/json\r\n"
        headers += f"Content-Length: {len(body)}\r\n".encode()
    request = (
        f"{'POST' if body else 'GET'} {path} HTTP/1.1\r\nHost: {host}\r\n".encode()
        + b"Connection: close\r\n"
        + headers
        + extra_header
        + b"\r\n\r\n"
        + body
    )
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, answer = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    parsed = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, parsed, answer


def logs_of(stack: Stack) -> str:
    return "".join(Path(p).read_text(errors="replace") for p in stack.logs)


def test_a_well_formed_correlation_id_follows_the_job_and_a_missing_one_is_made(
    running: Stack,
) -> None:
    with running.client() as client:
        given = client.post(
            "/jobs",
            json={"type": "echo", "case_id": "c-1", "params": {"text": "x"}},
            headers={"X-Correlation-ID": "order-77.a:b_c-d"},
        )
        assert given.headers["X-Correlation-ID"] == "order-77.a:b_c-d"
        job = wait_for_status(client, given.json()["id"])
        events = client.get(f"/jobs/{job['id']}/events").json()
        made = client.get("/openapi.json").headers["X-Correlation-ID"]
        not_found = client.get(f"/jobs/{uuid.uuid4()}", headers={"X-Correlation-ID": "nf-1"})

    assert job["correlation_id"] == "order-77.a:b_c-d"
    assert {e["correlation_id"] for e in events} == {"order-77.a:b_c-d"}
    assert GENERATED.fullmatch(made)
    assert not_found.status_code == 404 and not_found.headers["X-Correlation-ID"] == "nf-1"
    worker_line = eventually(
        lambda: [
            line
            for line in logs_of(running).splitlines()
            if f"job_id={job['id']}" in line and "echo attempt 1: succeeded" in line
        ],
        10,
        "the worker's log line about the job",
    )
    assert "correlation_id=order-77.a:b_c-d" in worker_line[0] and "attempt=1" in worker_line[0]


HOSTILE = [
    b"a" * 5000,  # huge
    b"evil\x01\x07id",  # control characters
    b"\x1b[31mred-terminal",  # an escape sequence
    b"semi;colon id with spaces",
    b"caf\xc3\xa9-nonascii",
]


def test_a_malformed_correlation_id_is_replaced_and_never_echoed_logged_or_stored(
    running: Stack,
) -> None:
    with running.client() as client:
        job = submit(client, "echo", {"text": "x"})
        wait_for_status(client, job["id"])
    for value in HOSTILE:
        for path in ("/openapi.json", f"/jobs/{job['id']}"):
            status, headers, body = raw_request(running, path, b"X-Correlation-ID: " + value)
            assert status == 200, (value, status)
            assert GENERATED.fullmatch(headers["x-correlation-id"]), headers["x-correlation-id"]
            assert value.decode("latin-1")[:40] not in body.decode("latin-1")
        submit_body = json.dumps({"type": "echo", "case_id": "c-1", "params": {"text": "x"}})
        status, headers, body = raw_request(
            running, "/jobs", b"X-Correlation-ID: " + value, submit_body.encode()
        )
        assert status == 202, body
        submitted = json.loads(body)
        assert submitted["correlation_id"] == headers["x-correlation-id"]
        assert GENERATED.fullmatch(submitted["correlation_id"])
    logs = logs_of(running)
    assert logs.count("accepted a job of type echo") >= len(HOSTILE) + 1
    for value in HOSTILE:
        assert value.decode("latin-1") not in logs


def test_json_logs_carry_the_correlation_id_job_id_attempt_and_trace_id(stack: Stack) -> None:
    receiver = OtlpReceiver()
    receiver.start()
    try:
        stack.start(
            "run",
            JOBLEDGER_OBSERVABILITY__JSON_LOGS="true",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
            OTEL_BSP_SCHEDULE_DELAY="100",
            JOBLEDGER_OTEL__METRICS_EXPORT_INTERVAL_S="0.3",
        )
        stack.wait_ready()
        with stack.client() as client:
            response = client.post(
                "/jobs",
                json={"type": "echo", "case_id": "c-1", "params": {"text": "x"}},
                headers={"X-Correlation-ID": "json-1"},
            )
            job_id = response.json()["id"]
            wait_for_status(client, job_id)

        def about_the_job() -> list[dict[str, Any]] | None:
            lines = [json.loads(x) for x in logs_of(stack).splitlines() if x.strip()]
            mine = [x for x in lines if x.get("job_id") == job_id]
            return mine if len(mine) >= 2 else None

        mine = eventually(about_the_job, 10, "log lines about the job")
        metric_names = eventually(
            lambda: receiver.metric_names >= {"jobledger.jobs.submitted"} and receiver.metric_names,
            10,
            "metrics over OTLP",
        )

        def the_jobs_spans() -> list[Any] | None:
            spans = [
                s for s in receiver.received() if s.attributes.get("jobledger.job_id") == job_id
            ]
            # The gateway's append and the worker's run are exported on their own schedules.
            ran = any(s.name.startswith("run ") for s in spans)
            appended = any(s.name.startswith("ledger append") for s in spans)
            return spans if ran and appended else None

        trace_ids = {s.trace_id for s in eventually(the_jobs_spans, 10, "the job's spans")}
    finally:
        stack.stop_all()
        receiver.stop()

    gateway = next(x for x in mine if x["logger"] == "jobledger.gateway")
    worker = next(x for x in mine if x["logger"] == "jobledger.worker")
    assert gateway["correlation_id"] == worker["correlation_id"] == "json-1"
    assert worker["attempt"] == 1 and worker["message"] == "echo attempt 1: succeeded"
    assert len(trace_ids) == 1 and gateway["trace_id"] == worker["trace_id"] == trace_ids.pop()
    assert {"jobledger.jobs.succeeded", "jobledger.job.duration"} <= metric_names


def test_the_gateway_serves_prometheus_metrics_of_jobs_queues_and_the_projector(
    stack: Stack,
) -> None:
    stack.start("run", JOBLEDGER_OBSERVABILITY__QUEUE_DEPTH_INTERVAL_S="0.2")
    stack.wait_ready()
    with stack.client() as client:
        done = [submit(client, "echo", {"text": "x"}) for _ in range(2)]
        failed = submit(client, "fail", {"message": "no"})
        for job in [*done, failed]:
            wait_for_status(client, job["id"])

        def scraped() -> str | None:
            text = client.get("/metrics").text
            return text if re.search(r"jobledger_dlq_depth\{[^}]*\} 1\.0", text) else None

        text = eventually(scraped, 10, "the dead job in the DLQ depth")
        response = client.get("/metrics")

    assert response.headers["content-type"].startswith("text/plain")
    assert re.search(r'jobledger_jobs_submitted_total\{[^}]*job_type="echo"[^}]*\} 2\.0', text)
    assert re.search(r'jobledger_jobs_succeeded_total\{[^}]*job_type="echo"[^}]*\} 2\.0', text)
    assert re.search(r'jobledger_jobs_failed_total\{[^}]*job_type="fail"[^}]*\} 1\.0', text)
    assert re.search(r'jobledger_jobs_dead_lettered_total\{[^}]*job_type="fail"[^}]*\} 1\.0', text)
    assert re.search(r'jobledger_job_duration_seconds_count\{[^}]*job_type="echo"', text)
    assert re.search(r'jobledger_job_queue_wait_seconds_count\{[^}]*job_type="echo"', text)
    # Two jobs that each waited a moment, not minutes: the due time survives AMQP intact.
    waited = re.search(
        r'jobledger_job_queue_wait_seconds_sum\{[^}]*job_type="echo"[^}]*\} (\S+)', text
    )
    assert waited and float(waited[1]) < 5, waited
    assert re.search(r"jobledger_worker_in_flight\{", text)
    assert re.search(r'jobledger_queue_depth\{[^}]*queue="t\w+\.work\.default"[^}]*\} 0', text)
    assert re.search(r"jobledger_dlq_depth\{[^}]*\} 1", text)
    assert re.search(r"jobledger_projector_lag\{[^}]*\} \d", text)


def test_healthz_and_readyz_say_what_is_not_ready(stack: Stack) -> None:
    stack.start("gateway", JOBLEDGER_AMQP__URL="amqp://guest:guest@127.0.0.1:1/")
    stack.wait_ready()
    with stack.client() as client:
        alive = client.get("/healthz")
        ready = client.get("/readyz")
        spec = client.get("/openapi.json").json()

    assert alive.status_code == 200 and alive.json()["status"] == "ok"
    assert ready.status_code == 503, ready.text
    checks = ready.json()["checks"]
    assert checks["postgres"] == "ok" and checks["rabbitmq"] != "ok"
    for path in ("/healthz", "/readyz", "/metrics", "/workers"):
        assert spec["paths"][path]["get"]["tags"] == ["ops"], path


def test_readyz_is_ok_and_workers_lists_live_workers_with_their_jobs(running: Stack) -> None:
    with running.client() as client:
        ready = client.get("/readyz")
        job = submit(client, "nap", {"seconds": 3})

        def holding() -> list[dict[str, Any]] | None:
            workers: list[dict[str, Any]] = client.get("/workers").json()
            return [w for w in workers if job["id"] in w["in_flight"]] or None

        holders = eventually(holding, 10, "a worker listing the job in flight")
        wait_for_status(client, job["id"])

    assert ready.status_code == 200 and ready.json()["checks"] == {
        "postgres": "ok",
        "rabbitmq": "ok",
    }
    assert holders[0]["pool"] == "default" and holders[0]["heartbeat_at"]


@pytest.fixture
def ops_port() -> Iterator[int]:
    yield free_port()


def test_a_worker_answers_health_and_metrics_on_its_ops_port(stack: Stack, ops_port: int) -> None:
    start_workers(stack, JOBLEDGER_OBSERVABILITY__OPS_PORT=str(ops_port))
    ops = f"http://127.0.0.1:{ops_port}"
    with stack.client() as client:
        job = submit(client, "echo", {"text": "x"})
        wait_for_status(client, job["id"])
    healthz = httpx.get(f"{ops}/healthz", timeout=5)
    readyz = httpx.get(f"{ops}/readyz", timeout=10)

    def scraped() -> str | None:
        text = httpx.get(f"{ops}/metrics", timeout=5).text
        return text if "jobledger_jobs_succeeded_total" in text else None

    metrics = eventually(scraped, 10, "the worker's metrics")

    assert healthz.status_code == 200
    assert readyz.status_code == 200 and readyz.json()["status"] == "ok"
    assert re.search(r'jobledger_jobs_succeeded_total\{[^}]*job_type="echo"[^}]*\} 1\.0', metrics)
    assert httpx.get(f"{ops}/nothing", timeout=5).status_code == 404


def test_with_tracing_off_the_callers_trace_context_still_reaches_every_event(
    running: Stack,
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with running.client() as client:
        response = client.post(
            "/jobs",
            json={"type": "echo", "case_id": "c-1", "params": {"text": "x"}},
            headers={"traceparent": traceparent},
        )
        job_id = response.json()["id"]
        wait_for_status(client, job_id)
        events = client.get(f"/jobs/{job_id}/events").json()

    assert [e["type"] for e in events][:2] == ["Submitted", "Started"]
    assert {e["traceparent"] for e in events} == {traceparent}


def test_each_of_a_worker_s_processes_answers_on_its_own_ops_port(
    stack: Stack, ops_port: int
) -> None:
    start_workers(stack, "--processes", "2", JOBLEDGER_OBSERVABILITY__OPS_PORT=str(ops_port))

    def answered(port: int) -> int | None:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code
        except httpx.TransportError:
            return None

    assert eventually(lambda: answered(ops_port), 20, "the first process's ops port") == 200
    assert eventually(lambda: answered(ops_port + 1), 20, "the second's, one up") == 200
