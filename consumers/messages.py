"""What a worker publishes besides acks: dead letters with a reason, deferred
deliveries (rate limits), and the cancel broadcasts it listens to."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage

from consumers.delivery import CONTENT_TYPE, Delivery
from consumers.routing import Names

log = logging.getLogger("jobledger.worker")

# x-death reasons that mean the message went through the DLQ (not a delay queue).
DEAD_REASONS = {"rejected", "delivery_limit", "maxlen"}


@dataclass(frozen=True)
class Messages:
    names: Names
    work: AbstractExchange
    dead: AbstractExchange
    delay: AbstractExchange
    control: AbstractExchange

    async def dead_letter(
        self,
        message: AbstractIncomingMessage,
        reason: str,
        worker_id: str,
        delivery: Delivery | None = None,
    ) -> None:
        """Publish a copy carrying the reason to the DLQ, then ack the original."""
        headers: dict[str, Any] = dict(message.headers or {})
        if delivery is not None:
            headers.update(delivery.headers())
        headers["x-reason"] = reason[:1000]
        headers["x-worker-id"] = worker_id
        dead = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self.dead.publish(dead, routing_key=message.routing_key or "")
        await message.ack()
        log.warning("dead-lettered %s: %s", message.message_id, reason)

    async def defer(
        self, message: AbstractIncomingMessage, delivery: Delivery, wait_s: float
    ) -> None:
        """Send the delivery round the delay queues for ``wait_s``, then ack this copy."""
        delay_s = max(self.names.clamp_delay(wait_s), 1)
        again = aio_pika.Message(
            delivery.body(),
            headers=delivery.headers(),
            content_type=CONTENT_TYPE,
            message_id=delivery.message_id,
            correlation_id=delivery.correlation_id or None,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self.delay.publish(again, routing_key=self.names.routing_key(delivery.pool, delay_s))
        await message.ack()

    async def listen_for_cancels(
        self, channel: AbstractChannel, on_cancel: Callable[[UUID], None]
    ) -> Callable[[], Awaitable[Any]]:
        """Consume the cancel broadcasts; return the coroutine function that stops it."""
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(self.control)

        async def received(message: AbstractIncomingMessage) -> None:
            async with message.process(ignore_processed=True):
                try:
                    on_cancel(UUID(json.loads(message.body)["job_id"]))
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("ignoring a malformed cancel message: %s", exc)

        tag = await queue.consume(received)
        return lambda: queue.cancel(tag)

    @staticmethod
    def is_redrive(message: AbstractIncomingMessage, names: Names) -> bool:
        """Did an operator move this message back from the DLQ?"""
        headers = message.headers or {}
        if "x-reason" in headers:
            return True
        deaths = headers.get("x-death") or []
        return any(
            isinstance(death, dict)
            and _text(death.get("reason")) in DEAD_REASONS
            and _text(death.get("queue")).startswith(names.work_queue(""))
            for death in (deaths if isinstance(deaths, list) else [])
        )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")
