"""AMQP frames written to the socket together: everything a process writes to the
broker during one turn of its event loop goes out in one send.

aiormq writes each frame set (a publish, an ack) to the transport as it comes, and
asyncio sends each write at once: one system call per message, and on loopback the
broker's side of the TCP stack runs in that call too. A dispatcher publishing a
batch, or a worker acking the jobs that one group commit settled, writes many in
the same turn. Here the transport's writes are gathered and handed to it at the end
of the turn (``loop.call_soon``), in order, as one buffer; a close first sends what
was gathered. Flow control is the transport's own, applied to the gathered bytes."""

from __future__ import annotations

import asyncio
from typing import Any

from aiormq.abc import URLorStr
from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory
from yarl import URL


class GatheredWrites(TransportFactory):
    """aiormq's transport factory (TCP or TLS, as the URL says), its writes gathered."""

    def __init__(self) -> None:
        self.tcp = TCPTransportFactory()
        self.tls = TLSTransportFactory()

    async def create(
        self, url: URLorStr | URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        url = URL(url)
        factory = self.tls if url.scheme == "amqps" else self.tcp
        reader, writer = await factory.create(url, **kwargs)
        gather_writes(writer.transport, asyncio.get_running_loop())
        return reader, writer


def gather_writes(transport: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Make ``transport.write`` gather until the end of the loop's turn."""
    write, close, write_eof = transport.write, transport.close, transport.write_eof
    pending: list[bytes] = []

    def flush() -> None:
        if not pending:
            return
        data = b"".join(pending) if len(pending) > 1 else pending[0]
        pending.clear()
        if not transport.is_closing():
            write(data)

    def gathered(data: bytes | bytearray | memoryview) -> None:
        if not pending:
            loop.call_soon(flush)
        pending.append(bytes(data))

    def flushed_close() -> None:
        flush()
        close()

    def flushed_write_eof() -> None:
        flush()
        write_eof()

    transport.write = gathered
    transport.close = flushed_close
    transport.write_eof = flushed_write_eof
