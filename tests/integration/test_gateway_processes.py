"""``jobledger gateway --processes N``: N processes on one port, sharing the tenants'
quotas, each replaced when it dies without a connection refused meanwhile."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.integration.conftest import Stack, eventually, free_port


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _gateways(stack: Stack, *args: str, **env: str) -> tuple[Any, list[int]]:
    supervisor = stack.start("gateway", "--processes", "2", *args, **env)
    stack.wait_ready()
    children = eventually(lambda: _children(supervisor.pid) or None, 20, "the gateway processes")
    assert len(children) == 2
    return supervisor, children


def _submit_on_new_connections(stack: Stack, count: int, each: int) -> list[httpx.Response]:
    """``count`` clients at once, each on a connection of its own (the kernel picks a
    process for each), each submitting ``each`` jobs."""
    headers = stack.auth_headers()

    def client(n: int) -> list[httpx.Response]:
        with httpx.Client(base_url=stack.url, timeout=30, headers=headers) as c:
            return [
                c.post("/jobs", json={"type": "echo", "case_id": f"p-{n}", "params": {"text": "x"}})
                for _ in range(each)
            ]

    with ThreadPoolExecutor(count) as pool:
        return [r for responses in pool.map(client, range(count)) for r in responses]


def _submitted(ops_port: int, job_type: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{ops_port}/metrics", timeout=5).text
    found = re.search(
        rf'jobledger_jobs_submitted_total\{{job_type="{job_type}"[^}}]*\}} (\S+)', text
    )
    return float(found.group(1)) if found else 0.0


def test_the_processes_of_a_gateway_admit_together_what_one_would(stack: Stack) -> None:
    ops_port = free_port()
    _gateways(
        stack,
        JOBLEDGER_QUOTA__SUBMITS_PER_S="5",
        JOBLEDGER_QUOTA__BURST="10",
        JOBLEDGER_QUOTA__TENANTS='{"warm": {"submits_per_s": 0}}',
        JOBLEDGER_OBSERVABILITY__OPS_PORT=str(ops_port),
    )
    warm = stack.auth_headers(tenant="warm")

    def both_serve() -> bool:
        for _ in range(8):
            with httpx.Client(base_url=stack.url, timeout=30, headers=warm) as c:
                c.post("/jobs", json={"type": "whoami", "case_id": "warm", "params": {}})
        return all(_submitted(port, "whoami") for port in (ops_port, ops_port + 1))

    eventually(both_serve, 30, "both processes to take connections (each counts on its ops port)")
    began = time.monotonic()
    responses = _submit_on_new_connections(stack, 32, 4)
    took_s = time.monotonic() - began
    statuses = Counter(r.status_code for r in responses)
    by_process = [_submitted(ops_port, "echo"), _submitted(ops_port + 1, "echo")]

    assert set(statuses) == {202, 429}, statuses
    # The burst, and what the rate refilled meanwhile: once, not once per process.
    assert statuses[202] <= 10 + 5 * took_s + 1, (statuses, took_s, by_process)
    assert sum(by_process) == statuses[202]


def test_a_gateway_process_killed_is_replaced_and_no_connection_is_refused(stack: Stack) -> None:
    supervisor, children = _gateways(stack)
    os.kill(children[0], signal.SIGKILL)
    # At once, on new connections: some land on the killed process's socket, which
    # waits for its replacement.
    responses = _submit_on_new_connections(stack, 16, 1)
    replaced = eventually(
        lambda: (c := _children(supervisor.pid)) and len(c) == 2 and children[0] not in c and c,
        30,
        "the killed process's replacement",
    )

    assert [r.status_code for r in responses] == [202] * 16
    assert children[1] in replaced
    with stack.client() as client:
        for response in responses:  # every job the gateway accepted is in the ledger
            job_id = response.json()["id"]
            events = client.get(f"/jobs/{job_id}/events").json()
            assert [e["type"] for e in events][:1] == ["Submitted"]


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited


def test_the_processes_of_a_supervisor_killed_stop_and_free_the_port(stack: Stack) -> None:
    supervisor, children = _gateways(stack)
    supervisor.kill()
    supervisor.wait()

    eventually(lambda: not any(map(_running, children)), 30, "the orphaned processes to stop")
    again = stack.start("gateway", "--processes", "2")  # the port is free again

    def answers() -> bool:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{stack.url}/healthz", timeout=1).status_code == 200
        return False

    eventually(answers, 60, "a gateway started again on the port")
    assert again.poll() is None


def _sockets(port: int, state: str) -> set[str]:
    """The inodes of this machine's IPv4 TCP sockets on local port ``port`` in
    ``state`` (0A: listening, 01: established)."""
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return {r[9] for r in rows if int(r[1].rsplit(":", 1)[1], 16) == port and r[3] == state}


def _held(pids: list[int], inodes: set[str]) -> int:
    """How many of the sockets ``inodes`` the processes hold."""
    held = 0
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                held += os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes
    return held


def test_a_stopping_gateway_refuses_new_connections_while_it_finishes_its_requests(
    stack: Stack,
) -> None:
    supervisor, children = _gateways(stack, JOBLEDGER_GATEWAY__READ_YOUR_WRITES_TIMEOUT_S="8")
    port = int(stack.url.rsplit(":", 1)[1])
    headers = stack.auth_headers()
    with httpx.Client(base_url=stack.url, timeout=10, headers=headers) as client:
        submitted = client.post(
            "/jobs", json={"type": "echo", "case_id": "stop", "params": {"text": "x"}}
        )
    position = submitted.headers["X-Ledger-Position"]

    def waits(_: int) -> int:
        # No projector runs: each process waits the whole timeout for the view.
        with httpx.Client(base_url=stack.url, timeout=30, headers=headers) as c:
            return c.get("/jobs/stop/jobs", headers={"X-Ledger-Position": position}).status_code

    with ThreadPoolExecutor(8) as pool:
        waiting = list(map(pool.submit, [waits] * 8, range(8)))
        eventually(
            lambda: _held(children, _sockets(port, "01")) == 8, 30, "the processes to take all 8"
        )
        time.sleep(0.5)  # and read the requests
        supervisor.send_signal(signal.SIGTERM)
        eventually(lambda: not _sockets(port, "0A"), 30, "nothing to listen on the port")
        unanswered = sum(not w.done() for w in waiting)  # the wait lasts 8 s
        outcomes = []
        for _ in range(10):
            try:
                with httpx.Client(base_url=stack.url, timeout=3) as c:
                    outcomes.append(c.get("/healthz").status_code)
            except httpx.ConnectError:
                outcomes.append("refused")
            except (httpx.TimeoutException, httpx.ReadError):  # reset when the supervisor exits
                outcomes.append("left waiting")
        finished = [w.result() for w in waiting]

    # Nothing listened any more while the requests in flight were still being served,
    # and new connections were refused, not left waiting on a stopping process.
    assert unanswered == 8
    assert outcomes == ["refused"] * 10
    assert finished == [200] * 8  # what was in flight is answered, after the wait
    assert supervisor.wait(timeout=30) == 0
