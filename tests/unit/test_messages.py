"""The worker's own publishes: every delivery message, the dispatcher's or a deferred
one, is built by one builder and carries when it is due."""

from __future__ import annotations

import time
from typing import Any
from uuid import uuid4

from application.delivery import DUE_AT_HEADER, Delivery
from consumers.messages import Messages
from consumers.routing import Names


class Exchange:
    def __init__(self) -> None:
        self.published: list[tuple[Any, str]] = []

    async def publish(self, message: Any, routing_key: str, **_: Any) -> None:
        self.published.append((message, routing_key))


class Incoming:
    acked = False

    async def ack(self) -> None:
        self.acked = True


async def test_a_deferred_delivery_is_a_new_copy_due_when_its_wait_ends() -> None:
    delay: Any = Exchange()
    other: Any = Exchange()
    messages = Messages(Names("t"), work=other, dead=other, delay=delay, control=other)
    delivery = Delivery(uuid4(), 1, "metered", "t1", "c1", "default", "corr-1")
    incoming: Any = Incoming()

    await messages.defer(incoming, delivery, 2.2)

    [(message, key)] = delay.published
    due_s = message.headers[DUE_AT_HEADER] / 1e3 - time.time()
    assert 2.0 < due_s <= 3.001  # rounded up to whole seconds: 3 (due in whole ms)
    assert key == Names("t").routing_key("default", 3)
    again = Delivery.decode(message.body, message.headers)
    assert again.job_id == delivery.job_id and again.attempt == 1
    assert again.delivery_id != delivery.delivery_id  # a copy of its own: nothing started yet
    assert incoming.acked
