"""How exactly the delay queues keep a delay, and that a long delay queued first does
not hold back a short one. Prints one line per delay: target, arrival, error.

    .venv/bin/python bench/delays.py                 # 60 s, 30 s, 5 s, 1 s (60 s first)
    .venv/bin/python bench/delays.py --delays 10 3 1

Uses the production topology (16 delay levels) under a throwaway prefix on the local
broker, and deletes it afterwards."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import aio_pika

from consumers.routing import Names
from infra import topology


async def measure(url: str, delays: list[int]) -> dict[int, float]:
    names = Names(f"bench{uuid.uuid4().hex[:8]}")
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await topology.declare(channel, names, ["default"], delivery_limit=5)
        entry = await channel.get_exchange(names.delay_entry)
        queue = await channel.get_queue(names.work_queue("default"))
        sent: dict[int, float] = {}
        try:
            for delay in delays:
                sent[delay] = time.monotonic()
                await entry.publish(
                    aio_pika.Message(str(delay).encode()),
                    routing_key=names.routing_key("default", delay),
                )
            arrived: dict[int, float] = {}
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    delay = int(message.body)
                    arrived[delay] = time.monotonic() - sent[delay]
                    print(
                        f"delay {delay:>4} s arrived after {arrived[delay]:7.3f} s "
                        f"(error {arrived[delay] - delay:+.3f} s)",
                        flush=True,
                    )
                    if len(arrived) == len(delays):
                        break
        finally:
            for level in range(names.delay_levels):
                await channel.queue_delete(names.delay(level))
                await channel.exchange_delete(names.delay(level))
            for queue_name in (names.work_queue("default"), names.dead_queue):
                await channel.queue_delete(queue_name)
            for exchange in (names.work_exchange, names.dead_exchange, names.control_exchange):
                await channel.exchange_delete(exchange)
    return arrived


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delays", type=int, nargs="+", default=[60, 30, 5, 1])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    args = parser.parse_args()
    arrived = asyncio.run(measure(args.url, args.delays))
    order = sorted(arrived, key=arrived.__getitem__)
    print(f"arrival order: {order}; worst error {max(abs(arrived[d] - d) for d in arrived):.3f} s")


if __name__ == "__main__":
    main()
