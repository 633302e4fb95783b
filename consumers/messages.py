"""The AMQP messages of jobledger: the one builder of a delivery's message (the
dispatcher's publishes and the worker's deferrals alike), the worker's dead letters
with a reason, and the cancel broadcasts it listens to."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage

from application.delivery import CONTENT_TYPE, DUE_AT_HEADER, Delivery, new_delivery_id
from application.lanes import Lane
from consumers.routing import Names

log = logging.getLogger("jobledger.worker")

# x-death reasons that mean the message went through the DLQ (not a delay queue).
DEAD_REASONS = {"rejected", "delivery_limit", "maxlen"}
MAX_CANCEL_BYTES = 256


def delivery_message(delivery: Delivery, delay_s: int, traceparent: str = "") -> aio_pika.Message:
    """The message of ``delivery``, due ``delay_s`` seconds from now (``x-due-at-ms``),
    carrying ``traceparent`` (the publishing span's) or the delivery's own."""
    headers = {**delivery.headers(), DUE_AT_HEADER: round((time.time() + delay_s) * 1e3)}
    if traceparent or delivery.traceparent:
        headers["traceparent"] = traceparent or delivery.traceparent
    return aio_pika.Message(
        delivery.body(),
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=delivery.message_id,
        correlation_id=delivery.correlation_id or None,
        headers=headers,
    )


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
        self,
        message: AbstractIncomingMessage,
        delivery: Delivery,
        wait_s: float,
        lane: Lane = Lane.NORMAL,
    ) -> None:
        """Send a new copy of the delivery round the delay queues for ``wait_s``, back
        to its ``lane``, then ack this one. Nothing started, so no copy is the
        attempt's own yet."""
        delay_s = max(self.names.clamp_delay(wait_s), 1)
        again = delivery_message(replace(delivery, delivery_id=new_delivery_id()), delay_s)
        key = self.names.routing_key(delivery.pool, delay_s, lane)
        await self.delay.publish(again, routing_key=key)
        await message.ack()

    async def listen_for_cancels(
        self, channel: AbstractChannel, on_cancel: Callable[[UUID], Awaitable[None]]
    ) -> Callable[[], Awaitable[Any]]:
        """Consume the cancel broadcasts; return the coroutine function that stops it.
        A broadcast only asks: ``on_cancel`` checks the ledger before stopping anything."""
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(self.control)

        async def received(message: AbstractIncomingMessage) -> None:
            async with message.process(ignore_processed=True):
                try:
                    job_id = _cancelled_job(message.body)
                except Exception as exc:  # noqa: BLE001 - a broadcast never stops the worker
                    log.warning("ignoring a malformed cancel message: %s", type(exc).__name__)
                    return
                await on_cancel(job_id)

        tag = await queue.consume(received)
        return lambda: queue.cancel(tag)

    @staticmethod
    def is_redrive(message: AbstractIncomingMessage, names: Names) -> bool:
        """Did the broker dead-letter this message from a work queue before (so an
        operator moved it back from the DLQ)? Only the broker's ``x-death`` says so;
        the worker then checks the ledger that this copy is a failed attempt's own."""
        deaths = (message.headers or {}).get("x-death") or []
        return any(
            isinstance(death, dict)
            and _text(death.get("reason")) in DEAD_REASONS
            and _text(death.get("queue")).startswith(names.work_queue(""))
            for death in (deaths if isinstance(deaths, list) else [])
        )


def _cancelled_job(body: bytes) -> UUID:
    if len(body) > MAX_CANCEL_BYTES:
        raise ValueError("too long")
    fields = json.loads(body)
    return UUID(str(fields["job_id"]))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")
