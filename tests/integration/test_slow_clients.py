"""Slow clients, over real sockets: a connection that sends nothing, headers a byte
at a time, or a body that trickles in is cut off; an unauthenticated upload is
answered at once, without its body being read (all were held open for over 60 s)."""

from __future__ import annotations

import socket
import time

import pytest

from tests.integration.conftest import Stack


def started(stack: Stack, *, body_timeout_s: str) -> Stack:
    """``jobledger run`` with a header and keep-alive timeout of 1 s."""
    stack.start(
        "run",
        JOBLEDGER_GATEWAY__HEADER_TIMEOUT_S="1",
        JOBLEDGER_GATEWAY__BODY_TIMEOUT_S=body_timeout_s,
        JOBLEDGER_GATEWAY__KEEP_ALIVE_TIMEOUT_S="1",
    )
    stack.wait_ready()
    return stack


@pytest.fixture
def impatient(stack: Stack) -> Stack:
    return started(stack, body_timeout_s="1")


@pytest.fixture
def quick_heads(stack: Stack) -> Stack:
    """Heads timed at 1 s, bodies at 5 s: an upload may outlast the header timeout."""
    return started(stack, body_timeout_s="5")


def connect(stack: Stack) -> socket.socket:
    host, port = stack.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def closed_after(sock: socket.socket, send: list[bytes], every_s: float) -> tuple[float, bytes]:
    """Send ``send`` a piece every ``every_s``; the seconds until the server closed the
    connection, and what it answered."""
    began = time.monotonic()
    answer = b""
    sock.settimeout(every_s)
    for piece in send:
        try:
            sock.sendall(piece)
        except OSError:
            break
        try:
            chunk = sock.recv(65536)
            if not chunk:
                return time.monotonic() - began, answer
            answer += chunk
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - began, answer
    sock.settimeout(10)
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except OSError:
        pass
    return time.monotonic() - began, answer


def test_a_connection_that_sends_nothing_is_closed(impatient: Stack) -> None:
    with connect(impatient) as sock:
        took, answer = closed_after(sock, [b""] * 40, 0.25)
    assert took < 5 and answer == b""


def test_headers_sent_a_byte_at_a_time_are_cut_off(impatient: Stack) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"
    with connect(impatient) as sock:
        took, _ = closed_after(sock, [bytes([b]) for b in request], 0.1)
    assert took < 5


def test_a_later_requests_headers_sent_a_byte_at_a_time_are_cut_off(impatient: Stack) -> None:
    """The header timeout held for a connection's first request only: after one
    request answered, a second one's headers could trickle in for as long as the client
    liked, as each byte put off the keep-alive timeout."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"
    with connect(impatient) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        took, _ = closed_after(sock, [bytes([b]) for b in request], 0.1)
    assert took < 5


def test_blank_lines_between_requests_do_not_hold_a_connection(impatient: Stack) -> None:
    """Bytes that begin no request are timed as a request's head: a client that sends
    a blank line now and then after its request, putting off the keep-alive timeout
    each time, is closed within the header timeout (C parser: open after 25 s)."""
    with connect(impatient) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        took, _ = closed_after(sock, [b"\r\n"] * 40, 0.25)
    assert took < 5


def test_a_body_still_uploading_after_an_early_answer_is_not_timed_as_a_head(
    quick_heads: Stack,
) -> None:
    """A request answered before its body is read (405 here) keeps its connection
    while the body goes on arriving within the body timeout, and the connection serves
    the next request."""
    body = b"x" * 6000
    head = f"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    with connect(quick_heads) as sock:
        sock.sendall(head.encode() + body[:100])
        answer = b""
        while not answer.endswith(b'"Method Not Allowed"}'):
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 405")
        for at in range(100, len(body), 1000):  # over 1.2 s: past the header timeout
            time.sleep(0.2)
            sock.sendall(body[at : at + 1000])
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_a_body_answered_early_that_trickles_in_is_cut_off(impatient: Stack) -> None:
    """A request answered before its body was read kept its connection for as long as
    the body trickled in, a byte now and then, each putting off the keep-alive timeout:
    with no token needed, a 405 held a connection for ever."""
    head = b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n"
    with connect(impatient) as sock:
        took, answer = closed_after(sock, [head, *[b"x"] * 60], 0.2)
    assert answer.startswith(b"HTTP/1.1 405"), answer[:200]
    assert took < 5


def test_an_authenticated_body_that_trickles_in_gets_408(impatient: Stack) -> None:
    body = b'{"type": "echo", "case_id": "c", "params": {"text": "slow"}}'
    token = impatient.auth_headers()["Authorization"]
    head = (
        f"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with connect(impatient) as sock:
        took, answer = closed_after(sock, [head, *[bytes([b]) for b in body]], 0.2)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert took < 5


def test_an_unauthenticated_upload_is_answered_401_without_being_read(impatient: Stack) -> None:
    head = (
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 60000\r\n\r\n"
    )
    with connect(impatient) as sock:
        took, answer = closed_after(sock, [head, b"{"], 0.2)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert took < 5
