"""Bad input, over real HTTP and the real broker: bounded, strict, and refused
with a status and a reason, never a crash."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import aio_pika
import pytest

from consumers.routing import Names
from tests.integration.conftest import Stack, submit, wait_for_status

# Its tests that take ``running`` keep to jobs, cases and tenants of their own.
pytestmark = pytest.mark.shared_stack


LIMIT = 65536  # JOBLEDGER_INPUT__MAX_BODY_BYTES's default


def test_an_oversized_body_gets_413_whether_declared_or_streamed(running: Stack) -> None:
    padding = "x" * (LIMIT + 1)
    body = {"type": "echo", "case_id": "c", "params": {"text": padding}}
    with running.client() as client:
        declared = client.post("/jobs", json=body)
        assert declared.status_code == 413
        assert declared.json()["detail"] == f"request body exceeds {LIMIT} bytes"

        def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
            yield b'{"type": "echo", "case_id": "c", "params": {"text": "'
            for _ in range(20):
                yield b"y" * 8192
            yield b'"}}'

        streamed = client.post(
            "/jobs", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert "exceeds" in streamed.json()["detail"]

        def small() -> Iterator[bytes]:
            yield b'{"type": "echo", "case_id": "c",'
            yield b' "params": {"text": "streamed"}}'

        accepted = client.post(
            "/jobs", content=small(), headers={"content-type": "application/json"}
        )
        assert accepted.status_code == 202, accepted.text


def test_over_long_headers_are_refused(running: Stack) -> None:
    with running.client() as client:
        too_long = client.get("/jobs/case-1/jobs", headers={"X-Padding": "p" * 9000})
        assert too_long.status_code == 431
        assert "headers exceed" in too_long.json()["detail"]
    with running.client() as fresh:
        much_longer = fresh.get("/jobs/case-1/jobs", headers={"X-Padding": "p" * 40000})
        assert much_longer.status_code == 431


def test_a_head_that_never_ends_is_cut_off_at_its_bound(running: Stack) -> None:
    """A head that never ends is refused once the request line and headers pass their
    bound, not buffered until the header timeout: on the C parser (httptools), which
    has no bound of its own, a gateway fed one grew by 60 MB in 3 s."""
    host, port = running.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        began = time.monotonic()

        def flood() -> None:  # 32 MB, or until the server stops reading
            try:
                for _ in range(512):
                    sock.sendall(b"a" * 65536)
            except OSError:
                pass

        sending = threading.Thread(target=flood, daemon=True)
        sending.start()
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if answer.endswith(b"received."):
                    break
        except OSError:
            pass
        took = time.monotonic() - began
        sock.shutdown(socket.SHUT_RDWR)
        sending.join(timeout=10)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert answer.endswith(b"Invalid HTTP request received.")
    assert took < 5  # not the header timeout (10 s)


def test_unknown_fields_and_over_long_values_get_422_naming_the_field(running: Stack) -> None:
    with running.client() as client:
        extra = client.post(
            "/jobs", json={"type": "echo", "case_id": "c", "params": {"text": "x"}, "admin": 1}
        )
        assert extra.status_code == 422
        assert extra.json()["detail"][0]["loc"] == ["body", "admin"]

        extra_param = client.post(
            "/jobs", json={"type": "echo", "case_id": "c", "params": {"text": "x", "sql": 1}}
        )
        assert extra_param.status_code == 422
        assert extra_param.json()["detail"][0]["loc"] == ["body", "params", "sql"]

        typed_extra = client.post("/jobs/c/echo", json={"text": "x", "sql": 1})
        assert typed_extra.status_code == 422
        assert typed_extra.json()["detail"][0]["loc"] == ["body", "sql"]

        long_case = client.post(
            "/jobs", json={"type": "echo", "case_id": "c" * 65, "params": {"text": "x"}}
        )
        assert long_case.status_code == 422
        assert long_case.json()["detail"][0]["loc"] == ["body", "case_id"]
        assert client.get(f"/jobs/{'c' * 65}/jobs").status_code == 422
        assert client.get("/jobs/not-a-uuid").status_code == 422

        long_key = client.post(
            "/jobs",
            json={"type": "echo", "case_id": "c", "params": {"text": "x"}},
            headers={"Idempotency-Key": "k" * 129},
        )
        assert long_key.status_code == 422
        assert long_key.json()["detail"][0]["loc"] == ["header", "idempotency-key"]

        unknown = client.post("/jobs", json={"type": "nosuch", "case_id": "c", "params": {}})
        assert unknown.status_code == 422
        assert "echo" in unknown.json()["registered"]

        beyond_bigint = client.get("/jobs/case-1/jobs", params={"cursor": "9369953002064983230"})
        assert beyond_bigint.status_code == 422  # found by the fuzzer: it was a 500
        assert beyond_bigint.json()["detail"][0]["loc"] == ["query", "cursor"]

        misspelt = client.get("/jobs/case-1/jobs", params={"limt": "5"})
        assert misspelt.status_code == 422
        assert misspelt.json()["detail"][0]["loc"] == ["query", "limt"]
        assert client.post(f"/jobs/{uuid.uuid4()}/cancel?force=1").status_code == 422
        token = {"access_token": running.token()}
        assert client.get("/jobs/case-1/jobs", params=token).status_code == 200

        long_correlation = client.get("/jobs/case-1/jobs", headers={"X-Correlation-ID": "c" * 129})
        assert long_correlation.status_code == 200
        assert long_correlation.headers["X-Correlation-ID"] != "c" * 129  # replaced


def test_malformed_queue_messages_are_dead_lettered_and_the_worker_keeps_running(
    running: Stack,
) -> None:
    names = Names(running.env["JOBLEDGER_AMQP__PREFIX"])
    bad = {
        "wrong types": json.dumps({"job_id": "x", "attempt": "1", "job_type": 3}).encode(),
        "missing fields": json.dumps({"attempt": 1}).encode(),
        "oversized": b'{"pad": "' + b"z" * 5000 + b'"}',
        "not an object": b"[1, 2, 3]",
    }

    async def publish_and_collect() -> dict[str, str]:
        connection = await aio_pika.connect(running.env["JOBLEDGER_AMQP__URL"])
        async with connection:
            channel = await connection.channel()
            work = await channel.get_exchange(names.work_exchange)
            for label, body in bad.items():
                await work.publish(aio_pika.Message(body, message_id=label), routing_key="default")
            queue = await channel.get_queue(names.dead_queue)
            reasons: dict[str, str] = {}
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    reasons[str(message.message_id)] = str(message.headers["x-reason"])
                    if len(reasons) == len(bad):
                        return reasons
        return reasons

    reasons = asyncio.run(asyncio.wait_for(publish_and_collect(), 30))
    assert set(reasons) == set(bad)
    assert all(r.startswith("undecodable") for r in reasons.values()), reasons
    assert "exceeds" in reasons["oversized"]
    with running.client() as client:
        job = submit(client, "echo", {"text": "still here"})
        assert wait_for_status(client, job["id"])["status"] == "succeeded"
