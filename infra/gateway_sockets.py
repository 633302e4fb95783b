"""The listening sockets of a gateway of several processes.

The supervisor binds them and each gateway process inherits its own. Process n gets
one socket for each address the host names, as a gateway of one process listens on
each. Every process's socket for an address is bound with ``SO_REUSEPORT``, and the
kernel spreads new connections over them. One socket shared by every process would
not spread them: the event loop that wakes first accepts every waiting connection.

The port is first bound once without ``SO_REUSEPORT``. If anything listens there
already, another gateway included, that bind is refused. Otherwise a second gateway
would join the first one's group without a word and take half its connections."""

from __future__ import annotations

import os
import socket
from typing import Any

from infra.errors import InfraError

# The descriptors of a gateway process's listening sockets, comma-separated.
FDS_ENV = "JOBLEDGER_GATEWAY_SOCKET_FDS"
BACKLOG = 2048


def bind(count: int, host: str, port: int) -> list[list[socket.socket]]:
    """``count`` sets of listening sockets, one socket per address of ``host`` in each,
    inheritable; all on one port (for port 0, the one the first socket was given)."""
    addresses = _addresses(host, port)
    try:
        port = _nobody_listens(addresses, port)
        return [
            [_listening(family, address, port) for family, address in addresses]
            for _ in range(count)
        ]
    except OSError as exc:
        raise InfraError(f"the gateway cannot listen on {host}:{port}: {exc}") from exc


def inherited() -> list[socket.socket] | None:
    """The sockets this gateway process was handed; None if it binds its own."""
    fds = os.environ.get(FDS_ENV)
    return [socket.socket(fileno=int(fd)) for fd in fds.split(",")] if fds else None


def handed(sockets: list[socket.socket]) -> tuple[tuple[int, ...], str]:
    """The descriptors to pass to a process, and ``FDS_ENV``'s value naming them."""
    fds = tuple(s.fileno() for s in sockets)
    return fds, ",".join(map(str, fds))


# (family, the socket address getaddrinfo gave: an IPv6 one keeps its flow info and
# scope id, without which a link-local address, fe80::…%eth0, cannot be bound)
Address = tuple[int, tuple[Any, ...]]


def _addresses(host: str, port: int) -> list[Address]:
    """Each (family, address) to listen on, as asyncio's own server would: every one
    ``host`` resolves to (every interface for an empty host)."""
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise InfraError(f"the gateway cannot listen on {host}:{port}: {exc}") from exc
    return list(dict.fromkeys((family, tuple(address)) for family, _, _, _, address in found))


def _nobody_listens(addresses: list[Address], port: int) -> int:
    """Bind the port without SO_REUSEPORT on every address (refused if it is taken),
    then let it go; the port, chosen here if it was 0."""
    for family, address in addresses:
        with _bound(family, address, port, reuse_port=False) as probe:
            port = probe.getsockname()[1]
    return port


def _listening(family: int, address: tuple[Any, ...], port: int) -> socket.socket:
    listening = _bound(family, address, port, reuse_port=True)
    try:
        listening.listen(BACKLOG)
        listening.set_inheritable(True)
    except OSError:
        listening.close()
        raise
    return listening


def _bound(family: int, address: tuple[Any, ...], port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to ``address`` with its port replaced by ``port``."""
    bound = socket.socket(family, socket.SOCK_STREAM)
    try:
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            bound.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        bound.bind((address[0], port, *address[2:]))
    except OSError:
        bound.close()
        raise
    return bound
