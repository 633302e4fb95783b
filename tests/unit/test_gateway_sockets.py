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


def _link_local() -> tuple[str, str] | None:
    """A link-local IPv6 address of this machine and its interface, if it has one."""
    try:
        with open("/proc/net/if_inet6") as table:
            rows = [line.split() for line in table]
    except OSError:
        return None
    for hexed, _, _, scope, _, name in rows:
        if int(scope, 16) == 0x20:  # link scope
            groups = [hexed[i : i + 4] for i in range(0, 32, 4)]
            return socket.inet_ntop(socket.AF_INET6, bytes.fromhex("".join(groups))), name
    return None


@pytest.mark.skipif(_link_local() is None, reason="no link-local IPv6 address here")
def test_a_link_local_address_is_bound_on_its_own_interface() -> None:
    """fe80::…%eth0: the scope names the interface; bound without it, the address is
    refused (EINVAL) and the gateway would not start."""
    found = _link_local()
    assert found is not None
    address, interface = found
    sets = gateway_sockets.bind(2, f"{address}%{interface}", 0)
    try:
        bound = [s.getsockname() for own in sets for s in own]
        assert {b[3] for b in bound} == {socket.if_nametoindex(interface)}
        port = bound[0][1]
        target = socket.getaddrinfo(f"{address}%{interface}", port, type=socket.SOCK_STREAM)
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(target[0][4])
    finally:
        _close(sets)
