"""The RabbitMQ topology, declared idempotently at every start.

jobledger.work (topic) ──#.<pool>──► jobledger.work.<pool>  (quorum: the pool's normal lane)
                       ──<bits>.<pool>.<lane>──► jobledger.work.<pool>.<lane>
                         (quorum: lanes retry, high, low, bulk; application/lanes.py)
     │ dead letters: x-delivery-limit, worker rejections
     ▼
jobledger.dead (fanout) ──► jobledger.dead  (quorum; the DLQ operators read)

Delays: jobledger.delay.15 ► … ► jobledger.delay.00 ► jobledger.work
The routing key spells the delay in seconds as 16 bits, most significant first,
then the pool: "0.0.…1.0.1.default". Exchange level k sends a message whose bit k
is 1 through queue level k (a fixed TTL of 2^k s, dead-lettering to level k-1) and
one whose bit k is 0 straight on to level k-1. Every message in one delay queue
waits the same time, so no message ever waits behind a longer one.
"""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, ExchangeType

from application.lanes import LANES
from consumers.routing import Names


def _quorum(**extra: Any) -> dict[str, Any]:
    return {"x-queue-type": "quorum", **extra}


def _dead_lettering(exchange: str) -> dict[str, Any]:
    return {
        "x-dead-letter-exchange": exchange,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare(
    channel: AbstractChannel, names: Names, pools: list[str], delivery_limit: int
) -> AbstractExchange:
    """Declare everything; return the work exchange."""
    work = await channel.declare_exchange(names.work_exchange, ExchangeType.TOPIC, durable=True)
    dead = await channel.declare_exchange(names.dead_exchange, ExchangeType.FANOUT, durable=True)
    dlq = await channel.declare_queue(names.dead_queue, durable=True, arguments=_quorum())
    await dlq.bind(dead)
    await channel.declare_exchange(names.control_exchange, ExchangeType.FANOUT, durable=True)
    for pool in pools:
        for lane in LANES:
            queue = await channel.declare_queue(
                names.work_queue(pool, lane),
                durable=True,
                arguments=_quorum(
                    **_dead_lettering(names.dead_exchange), **{"x-delivery-limit": delivery_limit}
                ),
            )
            await queue.bind(work, routing_key=names.lane_binding(pool, lane))
    await declare_delays(channel, names, work)
    return work


async def declare_delays(channel: AbstractChannel, names: Names, work: AbstractExchange) -> None:
    onward: AbstractExchange = work
    for level in range(names.delay_levels):
        exchange = await channel.declare_exchange(
            names.delay(level), ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            names.delay(level),
            durable=True,
            arguments=_quorum(**_dead_lettering(onward.name), **{"x-message-ttl": 1000 * 2**level}),
        )
        skip = "*." * (names.delay_levels - 1 - level)
        await queue.bind(exchange, routing_key=f"{skip}1.#")
        await onward.bind(exchange, routing_key=f"{skip}0.#")
        onward = exchange


def persistent_message(body: bytes, **kwargs: Any) -> aio_pika.Message:
    return aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **kwargs)
