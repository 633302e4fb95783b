"""The listening sockets a gateway's supervisor binds for its processes."""

from __future__ import annotations

import re
import socket

import pytest

from infra import gateway_sockets
from infra.errors import InfraError


def _close(sets: list[list[socket.socket]]) -> None:
    for own in sets:
        for listening in own:
            listening.close()


def test_each_process_gets_a_socket_for_each_address_of_the_host_on_one_port() -> None:
    addresses = {a[4][0] for a in socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)}
    sets = gateway_sockets.bind(3, "localhost", 0)
    try:
        ports = {s.getsockname()[1] for own in sets for s in own}
        assert len(sets) == 3 and len(ports) == 1
        assert all({s.getsockname()[0] for s in own} == addresses for own in sets)
        assert all(s.get_inheritable() for own in sets for s in own)
        with socket.create_connection(("127.0.0.1", ports.pop()), timeout=5):
            pass  # taken by one of them (the kernel's choice)
    finally:
        _close(sets)


def test_a_port_another_gateway_listens_on_is_refused_not_shared() -> None:
    first = gateway_sockets.bind(2, "127.0.0.1", 0)
    port = first[0][0].getsockname()[1]
    try:
        with pytest.raises(InfraError, match=re.escape(f"cannot listen on 127.0.0.1:{port}")):
            gateway_sockets.bind(2, "127.0.0.1", port)
    finally:
        _close(first)
    gateway_sockets.bind(1, "127.0.0.1", port)[0][0].close()  # free again once let go


def test_a_host_that_does_not_resolve_is_refused_by_name() -> None:
    with pytest.raises(InfraError, match=re.escape("cannot listen on no-such-host.invalid:8000")):
        gateway_sockets.bind(2, "no-such-host.invalid", 8000)
