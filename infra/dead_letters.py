"""Reads the DLQ through RabbitMQ's management API: messages are fetched and put
back (ackmode ack_requeue_true), so listing never takes anything out. The work
queues' depths are read through it too."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlsplit

from consumers.routing import Names
from gateway.services import (
    DeadLetter,
    DeadLettersUnavailable,
    QueueDepth,
    QueuesUnavailable,
)


class ManagementDeadLetters:
    def __init__(self, management_url: str, amqp_url: str, queue: str) -> None:
        parts = urlsplit(management_url)
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}/api"
        self.auth = (unquote(parts.username or "guest"), unquote(parts.password or "guest"))
        vhost = unquote(urlsplit(amqp_url).path[1:]) or "/"
        self.path = f"/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}/get"

    def peek(self, limit: int) -> list[DeadLetter]:
        # Imported here: every process builds this store, few ever read the DLQ, and
        # httpx (with what it pulls in) is a fifth of a second of each one's start.
        import httpx  # noqa: PLC0415

        body = {"count": limit, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 4096}
        try:
            response = httpx.post(self.base + self.path, json=body, auth=self.auth, timeout=10)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise DeadLettersUnavailable(f"the management API did not answer: {exc}") from exc
        return [_dead_letter(m.get("properties") or {}) for m in response.json()]


class ManagementQueues:
    """Each pool's work queue: messages ready, unacknowledged and its consumers."""

    def __init__(self, management_url: str, amqp_url: str, names: Names) -> None:
        parts = urlsplit(management_url)
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}/api"
        self.auth = (unquote(parts.username or "guest"), unquote(parts.password or "guest"))
        self.vhost = quote(unquote(urlsplit(amqp_url).path[1:]) or "/", safe="")
        self.names = names

    def depths(self, pools: list[str]) -> dict[str, QueueDepth]:
        import httpx  # noqa: PLC0415 - see ManagementDeadLetters.peek

        pool_of = {self.names.work_queue(pool): pool for pool in pools}
        columns = "name,messages_ready,messages_unacknowledged,consumers"
        try:
            response = httpx.get(
                f"{self.base}/queues/{self.vhost}",
                params={"columns": columns},
                auth=self.auth,
                timeout=10,
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise QueuesUnavailable(f"the management API did not answer: {exc}") from exc
        return {
            pool_of[q["name"]]: QueueDepth(
                ready=int(q.get("messages_ready") or 0),
                in_flight=int(q.get("messages_unacknowledged") or 0),
                consumers=int(q.get("consumers") or 0),
            )
            for q in response.json()
            if q.get("name") in pool_of
        }


def _dead_letter(properties: dict[str, Any]) -> DeadLetter:
    headers: dict[str, Any] = properties.get("headers") or {}
    deaths = headers.get("x-death") or [{}]
    # x-death lists the most recent death first; older ones may be delay-queue expiries.
    reason = headers.get("x-reason") or deaths[0].get("reason", "unknown")
    attempt = headers.get("x-attempt")
    return DeadLetter(
        message_id=properties.get("message_id"),
        job_id=headers.get("x-job-id"),
        job_type=headers.get("x-job-type"),
        attempt=attempt if isinstance(attempt, int) else None,
        tenant=headers.get("x-tenant"),
        correlation_id=headers.get("x-correlation-id"),
        reason=str(reason),
    )
