"""Latency of live progress: from a handler's ``ctx.progress`` call (in the worker
process) to an SSE client of the gateway receiving the event, with 1 client and with
1,000 concurrent clients of one gateway process.

    .venv/bin/python -m bench.sse_latency --clients 1 1000

Starts gateway, dispatcher, projector and worker as separate processes on a fresh
schema. All clients follow ``GET /jobs/{id}/progress`` of one ``ticker`` job, which
reports every 0.2 s with the call's wall-clock time as its message; a sample is the
receive time minus that time, counted only for reports made once every client was
connected. Meanwhile a probe reads ``GET /jobs/{id}`` every 0.1 s: the gateway's
answer time to ordinary requests with the streams open. The clients are plain asyncio sockets in this process (no HTTP library),
so their own parsing adds as little as possible. Prints p50/p99/max per client count.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench.stack import Stack, stack

SENT = re.compile(rb'"message":"([0-9]+\.[0-9]+)"')
DONE = b'"type":"Succeeded"'


async def follow(
    host: str,
    port: int,
    path: str,
    ready: asyncio.Event,
    counter: list[int],
    total: int,
    samples: list[float],
    after: list[float],
) -> None:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    counter[0] += 1
    if counter[0] == total:
        after.append(time.time())
        ready.set()
    pending = b""
    while True:
        chunk = await reader.read(1 << 16)
        received = time.time()
        if not chunk:
            break
        pending += chunk
        complete, _, pending = pending.rpartition(b"\n\n")
        for match in SENT.finditer(complete):
            sent = float(match.group(1))
            if after and sent >= after[0]:
                samples.append(received - sent)
        if DONE in complete:
            break
    writer.close()


def summary(samples: list[float]) -> str:
    if len(samples) < 2:
        return f"n={len(samples)} (too few samples)"
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return (
        f"n={len(samples):6d}  p50 {q[49] * 1e3:7.1f} ms  p99 {q[98] * 1e3:7.1f} ms  "
        f"max {max(samples) * 1e3:7.1f} ms"
    )


async def measure(s: Stack, clients: int, reports: int) -> list[float]:
    async with httpx.AsyncClient(base_url=s.url, timeout=30) as http:
        response = await http.post(
            "/jobs",
            json={
                "type": "ticker",
                "case_id": "bench",
                "params": {"reports": reports, "gap_s": 0.2},
            },
        )
        response.raise_for_status()
        job_id = response.json()["id"]
    url = urlsplit(s.url)
    ready, counter, after, samples = asyncio.Event(), [0], [], []
    tasks = [
        asyncio.create_task(
            follow(
                url.hostname or "127.0.0.1",
                url.port or 80,
                f"/jobs/{job_id}/progress",
                ready,
                counter,
                clients,
                samples,
                after,
            )
        )
        for _ in range(clients)
    ]
    started = time.monotonic()
    await ready.wait()
    print(f"  {clients} clients connected in {time.monotonic() - started:.1f} s", flush=True)
    streaming = asyncio.gather(*tasks)
    reads = await probe(s.url, job_id, streaming)
    await streaming
    print(f"  GET /jobs/{{id}} while they stream: {summary(reads)}", flush=True)
    return samples


async def probe(base_url: str, job_id: str, streaming: asyncio.Future[object]) -> list[float]:
    """The gateway's answer time to ordinary reads while the streams are open."""
    timings: list[float] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        while not streaming.done():
            started = time.monotonic()
            (await http.get(f"/jobs/{job_id}")).raise_for_status()
            timings.append(time.monotonic() - started)
            await asyncio.sleep(0.1)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 1000])
    parser.add_argument("--reports", type=int, default=100, help="progress reports per run")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the gateway inherits it
    print(f"load average before: {os.getloadavg()}  cpus: {os.cpu_count()}", flush=True)
    with tempfile.TemporaryDirectory() as logdir, stack("bench.sse_app", Path(logdir)) as s:
        for command in ("gateway", "dispatcher", "projector", "worker"):
            s.start(command)
        s.wait_ready()
        for clients in args.clients:
            samples = asyncio.run(measure(s, clients, args.reports))
            print(f"clients {clients:5d}  {summary(samples)}  load {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
