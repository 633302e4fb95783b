"""Hostile input: one bad byte never stops a process, and nothing a client or a
message says is believed without the ledger."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from typing import Any

import aio_pika
import httpx
import psycopg
import pytest

from application.delivery import Delivery
from consumers.routing import Names
from domain.job import Job
from domain.origin import Origin
from infra import ledger_store
from infra.settings import LedgerSettings, PostgresSettings
from tests.integration.conftest import (
    PG,
    TENANT,
    Stack,
    _pg_conninfo,
    eventually,
    start_workers,
    submit,
    wait_for_status,
)
from tests.integration.otlp import OtlpReceiver

# Its tests that take ``running`` keep to jobs, cases and tenants of their own.
pytestmark = pytest.mark.shared_stack


SECRET = "PATIENT_SECRET_7f3a"
# Raw JSON bodies Python's parser takes and no stored JSON can hold, with where.
BAD_VALUES = {
    "nul": ('"' + SECRET + '\\u0000"', []),
    "lone-surrogate": ('"' + SECRET + '\\ud800"', []),
    "nan": ("NaN", []),
    "infinity": ("-Infinity", []),
    "huge": ("1e400", []),
    "nested": ('{"deep": ["' + SECRET + '\\u0000"]}', ["deep", 0]),
}


def test_unstorable_values_in_a_body_are_refused_with_their_place_and_never_logged(
    running: Stack,
) -> None:
    """NaN, infinities, 1e400, NUL and lone surrogates, in every field of both submit
    routes: a 422 naming where (they were 500s whose tracebacks quoted the body)."""
    refused: dict[str, tuple[int, list[Any]]] = {}
    with running.client() as client:
        for bad, (raw, _) in sorted(BAD_VALUES.items()):
            for where in ("params", "case_id", "type"):
                fields = {"type": '"echo"', "case_id": '"case-1"', "params": '{"text": "hi"}'}
                fields[where] = '{"text": ' + raw + "}" if where == "params" else raw
                body = "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"
                response = client.post("/jobs", content=body.encode(), headers=JSON)
                refused[f"{bad} in {where}"] = (response.status_code, _loc(response))
            typed = client.post("/jobs/case-1/echo", content=f'{{"text": {raw}}}', headers=JSON)
            refused[f"{bad} in a typed route"] = (typed.status_code, _loc(typed))

    for case, (status, loc) in refused.items():
        bad, where = case.split(" in ")
        inner = BAD_VALUES[bad][1]
        expected = {
            "params": ["body", "params", "text", *inner],
            "a typed route": ["body", "text", *inner],
        }.get(where, ["body", where, *inner])
        assert (status, loc) == (422, expected), case
    assert SECRET not in running.logs[0].read_text()


JSON = {"content-type": "application/json"}


def _loc(response: httpx.Response) -> list[Any]:
    detail = response.json().get("detail")
    return list(detail[0]["loc"]) if isinstance(detail, list) else []


def test_a_body_that_is_not_json_without_a_token_gets_401_first(running: Stack) -> None:
    response = httpx.post(
        f"{running.url}/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 401


def test_a_malformed_request_gets_its_whole_400_though_its_body_is_unread(
    running: Stack,
) -> None:
    """The 400 for a request that cannot be parsed ended with the connection's close,
    and the close, with the request's body still unread, was a reset: the client lost
    the end of the answer ("connection reset by peer"), every time here."""
    host, port = running.url.removeprefix("http://").split(":")
    head = b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\nno colon\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(head + b"x" * 300_000)
        answer = b""
        while chunk := sock.recv(65536):  # to the server's EOF: a reset raises
            answer += chunk
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400"), answer[:200]
    assert body == b"Invalid HTTP request received."


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n",
        b"Content-Length: {n}\r\nContent-Length: 5\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
    ],
    ids=["length-then-chunked", "chunked-then-length", "two-lengths", "two-encodings"],
)
def test_a_request_framed_two_ways_is_refused_and_nothing_in_it_is_submitted(
    running: Stack, framing: bytes
) -> None:
    """A body whose end two headers place differently is how a request is smuggled
    past a proxy: what one reader takes for the body, the other takes for a second
    request. Here a submit hides in the body; it must never be accepted."""
    host, port = running.url.removeprefix("http://").split(":")
    token = running.auth_headers()["Authorization"].encode()
    case = f"smuggled-{uuid.uuid4().hex[:8]}"
    inner = json.dumps({"type": "echo", "case_id": case, "params": {"text": "x"}}).encode()
    hidden = (
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: " + token + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(inner)).encode()
        + b"\r\n\r\n"
        + inner
    )
    body = b"0\r\n\r\n" + hidden
    head = (
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: " + token + b"\r\n"
        b"Content-Type: application/json\r\n"
        + framing.replace(b"{n}", str(len(body)).encode())
        + b"\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert answer.count(b"HTTP/1.1 ") == 1, answer[:600]
    with running.client() as client:
        # A submit of the same case after it: once the view holds it, it would hold
        # a smuggled submit written before it too.
        after = client.post(
            "/jobs", json={"type": "echo", "case_id": case, "params": {"text": "y"}}
        )
        listed = client.get(
            f"/jobs/{case}/jobs",
            headers={"X-Ledger-Position": after.headers["X-Ledger-Position"]},
        ).json()
    assert [job["id"] for job in listed["items"]] == [after.json()["id"]], listed


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    ],
    ids=["no-host", "two-hosts", "gzip-then-chunked"],
)
def test_a_request_with_no_single_host_or_another_coding_gets_400(
    running: Stack, head: bytes
) -> None:
    """An HTTP/1.1 request names one host, and this server decodes no transfer coding
    but chunked: the parser itself lets both through, as h11 did not."""
    host, port = running.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert answer.endswith(b"Invalid HTTP request received.")


def test_the_body_of_an_upgrade_request_is_never_run_as_a_request_nor_logged(
    running: Stack,
) -> None:
    """The gateway upgrades to nothing. On the C parser an ``Upgrade`` request's body,
    sent after its head, was parsed as a request of its own: a request smuggled past a
    proxy that forwards upgrades and frames by the length."""
    host, port = running.url.removeprefix("http://").split(":")
    log = running.logs[0]  # the gateway's
    logged_before = log.stat().st_size
    hidden = b"GET /smuggled-by-upgrade HTTP/1.1\r\nHost: x\r\n\r\n"
    head = (
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: " + str(len(hidden)).encode() + b"\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        time.sleep(0.3)
        sock.sendall(hidden + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    statuses = [line for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
    assert b"HTTP/1.1 404" not in answer, answer[:600]  # /smuggled-by-upgrade never routed
    assert statuses and statuses[0].startswith(b"HTTP/1.1 405"), answer[:300]
    # Nor is it logged: two warnings a request, any client's to send, flooded the log.
    with log.open("rb") as logged:
        logged.seek(logged_before)
        assert b"upgrade" not in logged.read().lower()


@pytest.mark.parametrize("after_the_answer", [False, True], ids=["at-once", "after-the-405"])
def test_endless_trailers_are_refused(running: Stack, after_the_answer: bool) -> None:
    """Trailers after a chunked body are a head of their own; on the C parser they were
    buffered without bound (a gateway grew by 460 MB in 2 s). Sent after the route's
    405, their overflow could not be answered with a 400: the protocol raised in
    ``data_received`` and asyncio logged a fatal error for each such connection."""
    host, port = running.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
        )
        answer = b""
        if after_the_answer:
            while not answer.endswith(b'"Method Not Allowed"}'):
                answer += sock.recv(65536)
        began = time.monotonic()
        with contextlib.suppress(OSError):
            for _ in range(256):  # 8 MB of trailers at most
                sock.sendall(b"x-t: " + b"a" * 32762 + b"\r\n")
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert time.monotonic() - began < 5
    # Refused, or cut off after the 405 its head got first (the route answers at once).
    assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 405")), answer[:300]
    assert answer.count(b"HTTP/1.1 ") == 1, answer[:600]
    assert "Fatal error" not in "".join(p.read_text(errors="replace") for p in running.logs)


def test_a_token_whose_subject_holds_a_nul_is_refused(running: Stack) -> None:
    with running.client(subject="mallory\x00") as client:
        assert client.get("/jobs/case-1/jobs").status_code == 401


def test_a_handlers_nul_and_lone_surrogates_are_stored_and_listings_go_on(running: Stack) -> None:
    """The projector stopped for every tenant on the first NUL a handler wrote."""
    with running.client() as client:
        good = submit(client, "dirty", {}, case_id="dirty")
        bad = submit(client, "dirty", {"fail": True}, case_id="dirty")
        done = wait_for_status(client, good["id"])
        failed = wait_for_status(client, bad["id"])
        after = client.post(
            "/jobs", json={"type": "echo", "case_id": "after", "params": {"text": "x"}}
        )
        position = after.headers["X-Ledger-Position"]
        listed = client.get("/jobs/after/jobs", headers={"X-Ledger-Position": position}).json()
        dirty = client.get("/jobs/dirty/jobs").json()["items"]
    with running.client(tenant="another") as another:
        other = another.get("/jobs/after/jobs")

    assert done["status"] == "succeeded"
    assert done["result"] == {"text": "a\ufffdb", "nested": {"k\ufffd": ["\ufffd", 1.5]}}
    assert failed["status"] == "failed" and "\x00" not in failed["error"]
    assert [j["id"] for j in listed["items"]] == [after.json()["id"]]
    assert {j["status"] for j in dirty} == {"succeeded", "failed"}
    assert other.status_code == 200


def test_an_event_the_view_refuses_is_set_aside_and_the_projector_goes_on(
    running: Stack,
) -> None:
    """An event written before values were made storable: recorded as unprojectable
    with its position, and later events are projected."""
    settings = PostgresSettings(
        dbname=running.env["JOBLEDGER_POSTGRES__DBNAME"],
        schema=running.env["JOBLEDGER_POSTGRES__SCHEMA"],
    )
    ledger = ledger_store.open_ledger(settings, LedgerSettings(group_commit=False))
    try:
        job_id = uuid.uuid4()
        origin = Origin("old-writer")
        job = Job.submit(
            job_id=job_id,
            tenant=TENANT,
            case_id="poison",
            job_type="echo",
            params={"text": "x"},
            pool="elsewhere",
            max_attempts=1,
            origin=origin,
        )
        job.start(1, "w", origin)
        job.trigger_event(  # around the command, which would have made it storable
            Job.ProgressReported,
            tenant=TENANT,
            case_id="poison",
            job_type="echo",
            pool="elsewhere",
            attempt=1,
            actor="w",
            correlation_id="c",
            traceparent="",
            percent=5,
            message="NUL \x00 here",
        )
        ledger.save(job)
    finally:
        ledger.close()
    with running.client() as client:
        later = submit(client, "echo", {"text": "later"}, case_id="after-poison")
        assert wait_for_status(client, later["id"])["status"] == "succeeded"
        listed = eventually(
            lambda: client.get("/jobs/after-poison/jobs").json()["items"], 15, "the later job"
        )
        ready = client.get("/readyz").json()
    assert listed[0]["id"] == later["id"]
    assert ready["status"] == "ok" and "1 ledger events" in ready["warnings"]["projection"]
    schema = running.env["JOBLEDGER_POSTGRES__SCHEMA"]
    with psycopg.connect(_pg_conninfo(PG["dbname"])) as conn:
        rows = conn.execute(
            f"SELECT job_id, event, reason FROM {schema}.job_view_unprojectable"
        ).fetchall()
    assert rows == [(job_id, "ProgressReported", "DataError")]  # psycopg refuses the NUL


async def _publish(stack: Stack, messages: list[tuple[str, bytes, dict[str, Any]]]) -> None:
    """(exchange name, body, headers) published with the stack's prefix."""
    connection = await aio_pika.connect(stack.env["JOBLEDGER_AMQP__URL"])
    async with connection:
        channel = await connection.channel()
        for exchange_name, body, headers in messages:
            exchange = await channel.get_exchange(exchange_name)
            await exchange.publish(aio_pika.Message(body, headers=headers), routing_key="default")


async def _dead(stack: Stack) -> list[dict[str, Any]]:
    names = Names(stack.env["JOBLEDGER_AMQP__PREFIX"])
    connection = await aio_pika.connect(stack.env["JOBLEDGER_AMQP__URL"])
    found = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(names.dead_queue)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            found.append(dict(message.headers or {}))
    return found


def test_forged_messages_never_stall_or_fool_the_workers(stack: Stack) -> None:
    start_workers(stack, JOBLEDGER_WORKER__CONCURRENCY="2", JOBLEDGER_WORKER__PREFETCH="2")
    names = Names(stack.env["JOBLEDGER_AMQP__PREFIX"])
    nested = b"[" * 2000 + b"]" * 2000
    with stack.client() as client:
        theirs = submit(client, "nap", {"seconds": 3})
        wait_for_status(client, theirs["id"], {"running"})
        failed = submit(client, "fail", {})
        assert wait_for_status(client, failed["id"])["status"] == "failed"
        forged_redrive = Delivery(uuid.UUID(failed["id"]), 1, "fail", TENANT, "case-1", "default")
        death = [{"reason": "rejected", "queue": names.work_queue("default"), "count": 1}]
        asyncio.run(
            _publish(
                stack,
                [
                    *[(names.work_exchange, nested, {}) for _ in range(8)],
                    (names.control_exchange, json.dumps({"job_id": theirs["id"]}).encode(), {}),
                    (
                        names.work_exchange,
                        forged_redrive.body(),
                        {"x-reason": "operator", "x-death": death},
                    ),
                ],
            )
        )
        after = submit(client, "echo", {"text": "still serving"})
        assert wait_for_status(client, after["id"])["status"] == "succeeded"
        assert wait_for_status(client, theirs["id"], timeout_s=30)["status"] == "succeeded"
        history = [e["type"] for e in client.get(f"/jobs/{failed['id']}/events").json()]
        dead = eventually(
            lambda: [d for d in asyncio.run(_dead(stack)) if "x-reason" in d] or None, 15
        )
    assert "RetryRequested" not in history  # a forged re-drive re-runs nothing
    undecodable = [d for d in dead if str(d["x-reason"]).startswith("undecodable")]
    assert len(undecodable) == 8


def test_a_ledger_position_beyond_the_ledger_is_refused_at_once(running: Stack) -> None:
    """It parked a thread for 2 s a request: 120 of them took another tenant's median
    from 22 ms to 854 ms."""
    with running.client() as client:
        far = client.get(
            "/jobs/case-1/jobs", headers={"X-Ledger-Position": str(2**63 - 1)}, timeout=5
        )
        job = submit(client, "echo", {"text": "x"})
        near = client.get(
            "/jobs/case-1/jobs",
            headers={
                "X-Ledger-Position": client.get(f"/jobs/{job['id']}").headers.get(
                    "X-Ledger-Position", "1"
                )
            },
        )
    assert far.status_code == 422
    [error] = far.json()["detail"]  # shaped as every other 422: the one documented
    assert error["loc"] == ["header", "X-Ledger-Position"] and "beyond the ledger" in error["msg"]
    assert near.status_code == 200


def test_a_made_up_host_header_never_becomes_a_metric_label(stack: Stack) -> None:
    receiver = OtlpReceiver()
    receiver.start()
    try:
        stack.start("run", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url)
        stack.wait_ready()
        hosts = [f"made-up-{n}.example" for n in range(20)]
        for host in hosts:
            httpx.get(f"{stack.url}/healthz", headers={"Host": host}, timeout=5)
            httpx.get(f"{stack.url}/jobs/c/jobs", headers={"Host": host}, timeout=5)
        with stack.client() as client:
            text = client.get("/metrics").text
    finally:
        receiver.stop()
    assert "http_server_duration" in text or "http_server_request_duration" in text
    assert not any(host in text for host in hosts)


def test_a_tenant_past_its_quota_gets_429_and_others_go_on(stack: Stack) -> None:
    """One tenant's 3,000 submits were all accepted, and another tenant's job waited
    40.6 s behind them."""
    # One submit in 20 s once the burst is spent: four submits never earn a fifth token,
    # however slowly a loaded machine sends them.
    quotas = {"flood": {"submits_per_s": 0.05, "burst": 3}, "hoard": {"max_waiting": 2}}
    stack.start(
        "run", JOBLEDGER_WORKER__POOL="elsewhere", JOBLEDGER_QUOTA__TENANTS=json.dumps(quotas)
    )
    stack.wait_ready()
    body = {"type": "echo", "case_id": "q", "params": {"text": "x"}}
    with stack.client(tenant="flood") as flood, stack.client(tenant="hoard") as hoard:
        floods = [flood.post("/jobs", json=body) for _ in range(4)]
        hoards = [hoard.post("/jobs", json=body) for _ in range(3)]
    with stack.client(tenant="quiet") as quiet:
        quiet_answers = [quiet.post("/jobs", json=body).status_code for _ in range(10)]
    assert [r.status_code for r in floods] == [202, 202, 202, 429]
    assert 1 <= int(floods[-1].headers["Retry-After"]) <= 20
    assert [r.status_code for r in hoards] == [202, 202, 429]
    assert "jobs waiting" in hoards[-1].json()["detail"]
    assert quiet_answers == [202] * 10


def test_jobs_scheduled_for_later_count_toward_the_tenants_waiting_jobs(stack: Stack) -> None:
    """A tenant of max_waiting 2 held any number of jobs scheduled for later: the
    view's count, read again each second, left them out."""
    quotas = {"later": {"max_waiting": 2}}
    stack.start("run", JOBLEDGER_QUOTA__TENANTS=json.dumps(quotas))
    stack.wait_ready()
    body = {"type": "echo", "case_id": "later", "params": {"text": "x"}, "delay_s": 3600}
    with stack.client(tenant="later") as later:
        held = [later.post("/jobs", json=body).json()["id"] for _ in range(2)]
        for job_id in held:
            wait_for_status(later, job_id, {"scheduled"})
        time.sleep(1.1)  # the count is read again at most once a second: now from the view
        third = later.post("/jobs", json=body)

    assert third.status_code == 429
    assert "has 2 jobs waiting, at most 2" in third.json()["detail"]


def test_the_dlq_shows_a_message_to_the_tenant_the_ledger_names_not_its_header(
    running: Stack,
) -> None:
    """One tenant's admin read another's job status and error through a forged x-tenant."""
    names = Names(running.env["JOBLEDGER_AMQP__PREFIX"])
    with running.client() as client:
        job = submit(client, "fail", {}, case_id="dlq")
        wait_for_status(client, job["id"])
        forged = {"x-job-id": job["id"], "x-tenant": "mallory", "x-reason": "forged"}
        asyncio.run(_publish(running, [(names.dead_exchange, b"{}", forged)]))

        def listed() -> list[dict[str, Any]] | None:
            return [d for d in client.get("/dlq").json() if d["job_id"] == job["id"]] or None

        own = eventually(listed, 15, "the job's dead letters")
    with running.client(tenant="mallory") as mallory:
        theirs = mallory.get("/dlq").json()
    assert theirs == []
    assert len(own) == 2 and {d["job_status"] for d in own} == {"failed"}
