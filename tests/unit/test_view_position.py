"""Waiting for the job view to reach a position: one poller for every waiter, no
thread held per waiter."""

from __future__ import annotations

import asyncio
import threading

from gateway.view_position import ViewPosition


async def test_a_thousand_waiters_share_one_poller_and_wake_when_passed() -> None:
    position = 0
    reads: list[int] = []
    threads: set[int] = set()

    def read() -> int:
        reads.append(position)
        threads.add(threading.get_ident())
        return position

    view = ViewPosition(read, poll_s=0.005)
    waiting = [asyncio.create_task(view.reached(p % 10 + 1, 5)) for p in range(1000)]
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiting)
    position = 5
    for _ in range(500):  # until the poller has passed 5 (at most 5 s)
        if sum(w.done() for w in waiting) >= 500:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.02)
    assert sum(w.done() for w in waiting) == 500  # positions 1..5, none beyond
    position = 10
    assert all(await asyncio.gather(*waiting))
    assert len(reads) < 100  # one poller, not one read per waiter and poll


async def test_a_position_never_reached_times_out_and_stops_the_poller() -> None:
    view = ViewPosition(lambda: 3, poll_s=0.005)
    assert await view.reached(2, 1) is True
    assert await view.reached(4, 0.05) is False
    await asyncio.sleep(0.02)
    assert view._poller is not None and view._poller.done()
