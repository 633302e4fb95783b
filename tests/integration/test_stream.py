"""Live streams over real HTTP: a job's progress, resume by Last-Event-ID, the case
and tenant feeds, a slow client cut off, and the `watch` command."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from client.sse import SseEvent, SseParser
from tests.integration.conftest import (
    Stack,
    eventually,
    submit,
    wait_for_status,
)

# Its tests that take ``running`` keep to jobs, cases and tenants of their own.
pytestmark = pytest.mark.shared_stack


TERMINAL_TYPES = {"Succeeded", "Failed", "Cancelled"}


def sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    parser = SseParser()
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event


def read_until_closed(client: httpx.Client, url: str, **headers: str) -> list[SseEvent]:
    with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(sse(response.iter_lines()))


def history(client: httpx.Client, job_id: str) -> list[str]:
    return [e["type"] for e in client.get(f"/jobs/{job_id}/events").json()]


def assert_in_order_without_duplicates(events: list[SseEvent]) -> None:
    ids = [e.id for e in events]
    assert all(i is not None for i in ids)
    assert ids == sorted(set(ids)), ids  # type: ignore[type-var]
    assert [e.data["position"] for e in events] == ids


def test_a_jobs_progress_streams_live_to_its_terminal_event_then_closes(running: Stack) -> None:
    with running.client() as client:
        response = client.post(
            "/jobs",
            json={"type": "nap", "case_id": "case-1", "params": {"seconds": 1.0}},
            headers={"X-Correlation-ID": "corr-stream-1"},
        )
        assert response.headers["X-Correlation-ID"] == "corr-stream-1"
        job = response.json()
        with client.stream("GET", f"/jobs/{job['id']}/progress") as stream:
            assert stream.headers["X-Correlation-ID"]  # the middleware passes streams through
            events = list(sse(stream.iter_lines()))
        recorded = history(client, job["id"])
    assert job["correlation_id"] == "corr-stream-1"
    assert_in_order_without_duplicates(events)
    assert [e.data["type"] for e in events] == recorded
    assert events[-1].event == "result" and events[-1].data["status"] == "succeeded"
    assert events[-1].data["data"]["result"] == {"slept": 1.0}
    progress = [e for e in events if e.event == "progress"]
    assert [e.data["data"]["percent"] for e in progress][-1] == 100
    for event in events:
        assert event.data["job_id"] == job["id"]
        assert event.data["correlation_id"] == job["correlation_id"]
        assert "params" not in event.data["data"] and "params" not in event.data
    assert events[0].data["type"] == "Submitted" and events[0].data["status"] == "queued"


def test_reconnecting_with_last_event_id_resumes_with_no_gap_and_no_duplicate(
    running: Stack,
) -> None:
    with running.client() as client:
        job = submit(client, "nap", {"seconds": 1.0})
        url = f"/jobs/{job['id']}/progress"
        first: list[SseEvent] = []
        with client.stream("GET", url) as response:
            for event in sse(response.iter_lines()):
                first.append(event)
                if event.event == "progress":
                    break  # the client goes away mid-job
        rest = read_until_closed(client, url, **{"Last-Event-ID": str(first[-1].id)})
        recorded = history(client, job["id"])
        # Nothing follows the terminal event: the job's stream has ended for good.
        finished = client.get(url, headers={"Last-Event-ID": str(rest[-1].id)})
        replayed = read_until_closed(client, url, **{"Last-Event-ID": str(first[0].id)})
    assert rest, "the job was still running when the first stream was left"
    assert_in_order_without_duplicates(first + rest)
    assert [e.data["type"] for e in first + rest] == recorded
    assert finished.status_code == 204
    assert [e.id for e in replayed] == [e.id for e in first[1:] + rest]


def test_an_unknown_job_is_not_found_before_any_stream_opens(running: Stack) -> None:
    with running.client() as client:
        response = client.get(f"/jobs/{uuid.uuid4()}/progress")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")


def test_every_streaming_route_is_tagged_stream_and_the_page_is_not_in_the_schema(
    running: Stack,
) -> None:
    with running.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    streaming = ["/jobs/{job_id}/progress", "/cases/{case_id}/stream", "/stream"]
    assert all(paths[p]["get"]["tags"] == ["stream"] for p in streaming)
    tagged = {p for p, ops in paths.items() for op in ops.values() if "stream" in op["tags"]}
    assert tagged == set(streaming)
    assert "/ui/jobs/{job_id}" not in paths


def test_the_case_and_tenant_feeds_carry_their_jobs_and_resume_by_id(running: Stack) -> None:
    with running.client() as client, running.client() as other:
        with (
            client.stream("GET", "/cases/case-a/stream") as case_feed,
            other.stream("GET", "/stream") as tenant_feed,
        ):
            assert case_feed.status_code == tenant_feed.status_code == 200
            job_a = submit(client, "echo", {"text": "a"}, case_id="case-a")
            job_b = submit(client, "echo", {"text": "b"}, case_id="case-b")
            case_events = _until_finished(sse(case_feed.iter_lines()), {job_a["id"]})
            tenant_events = _until_finished(
                sse(tenant_feed.iter_lines()), {job_a["id"], job_b["id"]}
            )
        history_a, history_b = history(client, job_a["id"]), history(client, job_b["id"])
        with client.stream(
            "GET", "/cases/case-a/stream", headers={"Last-Event-ID": str(case_events[0].id)}
        ) as resumed_feed:
            resumed = _until_finished(sse(resumed_feed.iter_lines()), {job_a["id"]})
    assert {e.data["job_id"] for e in case_events} == {job_a["id"]}
    assert [e.data["type"] for e in case_events] == history_a
    assert_in_order_without_duplicates(tenant_events)
    for job, recorded in ((job_a, history_a), (job_b, history_b)):
        assert [e.data["type"] for e in tenant_events if e.data["job_id"] == job["id"]] == recorded
    assert [e.id for e in resumed] == [e.id for e in case_events[1:]]


def test_a_job_of_another_tenant_is_not_found_and_stays_out_of_its_feed(running: Stack) -> None:
    with running.client() as client, running.client(tenant="another-tenant") as other:
        with other.stream("GET", "/stream") as feed:
            assert feed.status_code == 200
            ours = submit(client, "echo", {"text": "ours"})
            theirs = submit(other, "echo", {"text": "theirs"})
            seen = _until_finished(sse(feed.iter_lines()), {theirs["id"]})
        wait_for_status(client, ours["id"])
        assert other.get(f"/jobs/{ours['id']}/progress").status_code == 404
        assert other.get(f"/ui/jobs/{ours['id']}").status_code == 404
        resumed = read_until_closed(other, f"/jobs/{theirs['id']}/progress")
    assert {e.data["job_id"] for e in seen} == {theirs["id"]}
    assert [e.id for e in resumed] == [e.id for e in seen]


def test_a_slow_client_is_cut_off_while_the_others_continue(stack: Stack) -> None:
    stack.start(
        "run",
        JOBLEDGER_STREAM__CLIENT_QUEUE_SIZE="32",
        JOBLEDGER_STREAM__HEARTBEAT_INTERVAL_S="1",
        JOBLEDGER_WORKER__PROGRESS_INTERVAL_S="0.001",
    )
    stack.wait_ready()
    slow, head = _raw_stream(stack, "/stream")  # subscribed; it reads nothing more till the end
    with slow, stack.client() as client, stack.client() as reader:
        with reader.stream("GET", "/stream") as feed:
            lines = feed.iter_lines()
            # An idle stream gets keep-alive comments (every second here).
            assert next(line for line in lines if line.startswith(":")) == ": keep-alive"
            # Progress is coalesced to what the ledger can commit, so a busy machine
            # records fewer reports: chatter until more went by than the kernel and
            # the gateway's transport could ever hold for a client that reads nothing.
            fast: list[SseEvent] = []
            for _ in range(25):
                if _payload_bytes(fast) > _more_than_buffers_hold(queue_size=32):
                    break
                jobs = [
                    submit(client, "chatter", {"reports": 400, "message_bytes": 60000})
                    for _ in range(4)
                ]
                fast += _until_finished(sse(lines), {j["id"] for j in jobs})
            else:
                raise AssertionError(f"only {_payload_bytes(fast)} bytes went by")
        assert_in_order_without_duplicates(fast)
        # The slow client gets what was buffered for it, then the end of the stream.
        received = head + _drain(slow)
        cut = list(sse(iter(_sse_body(received).decode().split("\n"))))
        assert cut, "the slow client got nothing at all"
        assert len(cut) < len(fast), "the slow client was never cut off"
        assert [e.id for e in cut] == [e.id for e in fast[: len(cut)]]
        with client.stream(
            "GET", "/stream", headers={"Last-Event-ID": str(cut[-1].id)}
        ) as resumed_feed:
            resumed = _until_position(sse(resumed_feed.iter_lines()), fast[-1].id or 0)
    assert [e.id for e in cut + resumed] == [e.id for e in fast]


def test_the_watch_command_shows_a_job_to_its_end(running: Stack) -> None:
    with running.client() as client:
        job = submit(client, "nap", {"seconds": 0.5})
    result = running.cli("watch", job["id"], "--url", running.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("100%  nap 10/10" in line for line in lines), result.stdout
    assert lines[-1] == f"job {job['id']} succeeded: {{'slept': 0.5}}"


def _until_finished(events: Iterator[SseEvent], job_ids: set[str]) -> list[SseEvent]:
    """Read a feed until every one of ``job_ids`` has had its terminal event."""
    seen: list[SseEvent] = []
    waiting = set(job_ids)
    for event in events:
        seen.append(event)
        if event.data["type"] in TERMINAL_TYPES:
            waiting.discard(event.data["job_id"])
            if not waiting:
                return seen
    raise AssertionError(f"the feed ended before {waiting} finished")


def _until_position(events: Iterator[SseEvent], position: int) -> list[SseEvent]:
    seen: list[SseEvent] = []
    for event in events:
        seen.append(event)
        if (event.id or 0) >= position:
            return seen
    raise AssertionError(f"the feed ended before position {position}")


def _payload_bytes(events: list[SseEvent]) -> int:
    return sum(len(json.dumps(e.data)) for e in events)


def _more_than_buffers_hold(queue_size: int, event_bytes: int = 61_000) -> int:
    """A bound on what a stream can absorb before the gateway's buffer for it fills:
    the socket buffers on both ends (autotuned up to tcp_wmem's and tcp_rmem's
    maximum on loopback), the transport's write buffer, and the queue itself."""
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    return 2 * wmem_max + (queue_size + 2) * event_bytes + (1 << 20)


def _raw_stream(stack: Stack, path: str) -> tuple[socket.socket, bytes]:
    """A stream read through a socket with a tiny receive buffer, so that a client
    that stops reading holds the server back as soon as possible."""
    port = int(stack.env["JOBLEDGER_GATEWAY__PORT"])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    headers = "".join(f"{k}: {v}\r\n" for k, v in stack.auth_headers().items())
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
    head = b""
    deadline = time.monotonic() + 10
    while b"\r\n\r\n" not in head and time.monotonic() < deadline:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock, head


def _drain(sock: socket.socket, timeout_s: float = 20) -> bytes:
    """Everything the server sends until it ends the response or the connection."""
    received = bytearray()
    deadline = time.monotonic() + timeout_s
    sock.settimeout(timeout_s)
    while not received.endswith(b"\r\n0\r\n\r\n") and (chunk := sock.recv(65536)):
        received += chunk
        assert time.monotonic() < deadline, "the server never ended the stream"
    return bytes(received)


def _sse_body(response: bytes) -> bytes:
    """The body of a chunked HTTP response, as far as it goes."""
    _, _, rest = response.partition(b"\r\n\r\n")
    body = bytearray()
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep or not size_line:
            break
        size = int(size_line, 16)
        if size == 0:
            break
        body += rest[:size]
        rest = rest[size + 2 :]
    return bytes(body)


def test_watch_follows_a_retried_job_past_its_first_failure(running: Stack) -> None:
    with running.client() as client:
        job = submit(client, "fail", {"message": "first try"})
        wait_for_status(client, job["id"])
        assert client.post(f"/jobs/{job['id']}/retry").status_code == 202
        eventually(
            lambda: (
                (j := client.get(f"/jobs/{job['id']}").json())["status"] == "failed"
                and j["attempt"] == 2
            ),
            30,
            "the retried attempt to fail",
        )
    result = running.cli("watch", job["id"], "--url", running.url)
    assert result.returncode == 1, result.stderr
    # The first Failed in the history is not the end: the retry's attempt is shown too.
    assert "started    attempt 2" in result.stdout, result.stdout
    assert result.stdout.splitlines()[-1].startswith(f"job {job['id']} failed")


def test_a_feed_refuses_to_resume_further_back_than_its_bound(stack: Stack) -> None:
    stack.start("run", JOBLEDGER_STREAM__MAX_CATCH_UP_EVENTS="5")
    stack.wait_ready()
    with stack.client() as client:
        jobs = [submit(client, "echo", {"text": str(i)}) for i in range(3)]
        for job in jobs:
            wait_for_status(client, job["id"])
        head = max(
            e.id or 0
            for job in jobs
            for e in read_until_closed(client, f"/jobs/{job['id']}/progress")
        )
        too_old = client.get("/stream", headers={"Last-Event-ID": "0"})
        assert too_old.status_code == 409, too_old.text
        assert "behind the ledger" in too_old.json()["detail"]
        case_too_old = client.get("/cases/case-1/stream", headers={"Last-Event-ID": "0"})
        assert case_too_old.status_code == 409
        # A job's own stream reads by its id, whatever the position: never refused.
        assert client.get(f"/jobs/{jobs[0]['id']}/progress").status_code == 200
        with client.stream("GET", "/stream", headers={"Last-Event-ID": str(head - 1)}) as recent:
            assert recent.status_code == 200
            resumed = next(e for e in sse(recent.iter_lines()))
        assert resumed.id == head
