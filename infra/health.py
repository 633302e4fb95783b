"""Readiness probes of PostgreSQL and RabbitMQ, and the small operations HTTP
server of the processes that have no HTTP API of their own (dispatcher, projector,
worker): ``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import aio_pika
import psycopg

from gateway.ops import Ops, Probe, check_all
from infra.settings import Settings
from infra.telemetry import prometheus_text

log = logging.getLogger("jobledger.ops")
PROBE_TIMEOUT_S = 2


def probes(settings: Settings) -> dict[str, Probe]:
    def ping_postgres() -> None:
        conninfo = f"{settings.postgres.conninfo} connect_timeout={PROBE_TIMEOUT_S}"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("SELECT 1")

    async def postgres() -> None:
        await asyncio.to_thread(ping_postgres)

    async def rabbitmq() -> None:
        connection = await aio_pika.connect(settings.amqp.url, timeout=PROBE_TIMEOUT_S)
        await connection.close()

    return {"postgres": postgres, "rabbitmq": rabbitmq}


async def serve_ops(settings: Settings, stopping: asyncio.Event) -> None:
    """Answer /healthz, /readyz and /metrics on the ops port until stopping."""
    ops = Ops(probes=probes(settings), metrics=prometheus_text)
    obs = settings.observability

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ", 2)[1].split(b"?", 1)[0].decode("ascii", "replace")
            status, content_type, body = await _route(ops, path)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        except IndexError:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
        finally:
            writer.close()

    try:
        server = await asyncio.start_server(answer, obs.ops_host, obs.ops_port or 0)
    except OSError as exc:  # e.g. the port is taken by a sibling worker process
        log.warning(
            "no ops endpoints: cannot listen on %s:%s (%s)", obs.ops_host, obs.ops_port, exc
        )
        return
    port = server.sockets[0].getsockname()[1]
    log.info("ops endpoints on http://%s:%s (/healthz /readyz /metrics)", obs.ops_host, port)
    async with server:
        await stopping.wait()
    with contextlib.suppress(Exception):
        await server.wait_closed()


async def _route(ops: Ops, path: str) -> tuple[str, str, bytes]:
    match path:
        case "/healthz":
            return "200 OK", "application/json", b'{"status":"ok"}'
        case "/readyz":
            checks = await check_all(ops)
            ready = all(v == "ok" for v in checks.values())
            body = {"status": "ok" if ready else "unavailable", "checks": checks}
            status = "200 OK" if ready else "503 Service Unavailable"
            return status, "application/json", json.dumps(body).encode()
        case "/metrics":
            text, content_type = prometheus_text()
            return "200 OK", content_type, text
    return "404 Not Found", "text/plain", b"not found"
