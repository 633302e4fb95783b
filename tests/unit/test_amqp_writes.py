"""Writes to the broker gathered per turn of the event loop (infra/amqp_writes.py),
over a real loopback socket."""

from __future__ import annotations

import asyncio

from infra.amqp_writes import gather_writes


async def _server() -> tuple[asyncio.Server, asyncio.Future[bytes]]:
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.set_result(await reader.read())  # everything, until the client's EOF
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0), received


async def test_the_writes_of_one_turn_reach_the_socket_as_one_in_order() -> None:
    server, received = await _server()
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    sent: list[bytes] = []
    write = writer.transport.write

    def send(data: bytes | bytearray | memoryview) -> None:
        sent.append(bytes(data))
        write(data)

    writer.transport.write = send  # type: ignore[method-assign]
    gather_writes(writer.transport, asyncio.get_running_loop())

    for frame in (b"one;", b"two;", b"three;"):
        writer.write(frame)
    assert sent == []  # held until the turn ends
    await asyncio.sleep(0)
    writer.write(b"four;")
    await asyncio.sleep(0)
    writer.close()
    await writer.wait_closed()

    assert sent == [b"one;two;three;", b"four;"]
    assert await asyncio.wait_for(received, 10) == b"one;two;three;four;"
    server.close()


async def test_a_close_sends_what_was_gathered_first() -> None:
    server, received = await _server()
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    gather_writes(writer.transport, asyncio.get_running_loop())

    writer.write(b"close-ok")
    writer.close()  # in the same turn as the write
    await writer.wait_closed()

    assert await asyncio.wait_for(received, 10) == b"close-ok"
    server.close()
