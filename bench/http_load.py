"""A lean HTTP/1.1 load generator: C keep-alive connections on one event loop, each
sending its requests one after another. It costs the benchmark's machine far less
CPU a request than a general-purpose client (tens of microseconds against about a
millisecond for httpx in threads), so on two cores the figures are the server's,
not the client's."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit


async def _connection(
    host: str,
    port: int,
    requests: list[bytes],
    statuses: Counter[int],
    latencies: list[float],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for request in requests:
            began = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - began)
            statuses[status] += 1
    finally:
        writer.close()


def post(
    url: str,
    path: str,
    body: Callable[[int], bytes],
    headers: dict[str, str],
    total: int,
    connections: int,
) -> tuple[float, Counter[int], list[float]]:
    """POST ``total`` bodies (``body(n)``) over ``connections`` at once: the seconds it
    took, the count of each status, and each request's latency."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())

    def request(n: int) -> bytes:
        payload = body(n)
        return (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n{extra}\r\n"
        ).encode() + payload

    each = [
        [request(n) for n in range(c, total, connections)] for c in range(min(connections, total))
    ]
    statuses: Counter[int] = Counter()
    latencies: list[float] = []

    async def run() -> float:
        began = time.perf_counter()
        await asyncio.gather(*(_connection(host, port, r, statuses, latencies) for r in each))
        return time.perf_counter() - began

    return asyncio.run(run()), statuses, latencies
