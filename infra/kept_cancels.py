"""Cancels that are not lost on the way.

Python 3.11's ``asyncio.wait_for`` loses a cancel that reaches its task in the loop turn
in which the awaited thing finishes: it returns the result instead of raising, and the
task runs on as if no one had asked it to stop (CPython gh-86296, fixed in 3.12 by
building ``wait_for`` on ``asyncio.timeout``). aio-pika and aiormq wait_for every
connect and many broker calls: a dispatcher stopped as its connect completed closed
the half-open connection, whose connection task lost the close's cancel that way and
slept out its 5 s reconnect interval before the stop could end (21 stops of 200,
bench/stop_race.py). ``install`` puts the 3.12 behaviour in place for the process;
every serving process runs with it (infra/cli.py), the handlers a worker runs on its
loop or in its threads included (process-run handlers run in children of a zygote of
their own, which does not install it).

``cancel_and_wait`` is the other half: it ends a task of ours and waits for it, and a
cancel of the waiting task during that wait still cancels it (``suppress`` around the
``await`` would take that cancel for the ended task's own)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")

_wait_for_of_3_11 = asyncio.wait_for  # noqa: TID251 - the one kept, for no time at all


async def wait_for(fut: Awaitable[T], timeout: float | None) -> T:
    """``asyncio.wait_for`` as Python 3.12 has it: the awaitable runs in this task,
    under a timeout, and a cancel of this task always raises here."""
    if timeout is not None and timeout <= 0:
        # No time at all: done now or timed out; nothing is awaited that a cancel could
        # be lost in, and 3.11's behaviour is 3.12's.
        return await _wait_for_of_3_11(fut, timeout)
    async with asyncio.timeout(timeout):
        return await fut


def install() -> None:
    """Make ``asyncio.wait_for`` keep cancels, for every caller in this process."""
    if sys.version_info >= (3, 12):
        return  # already so
    asyncio.wait_for = wait_for  # type: ignore[assignment]  # noqa: TID251
    asyncio.tasks.wait_for = wait_for  # type: ignore[assignment]


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended. A cancel of the caller meanwhile is
    raised here, not mistaken for the task's, and the task ends on its own; how it
    ends is retrieved either way, so that asyncio does not log a failure as never
    retrieved."""
    task.add_done_callback(_retrieve)
    task.cancel()
    await asyncio.wait({task})


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
