"""Reads the DLQ through RabbitMQ's management API: messages are fetched and put
back (ackmode ack_requeue_true), so listing never takes anything out."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlsplit

from gateway.services import DeadLetter, DeadLettersUnavailable


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
