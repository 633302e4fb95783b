"""A stop is a cancel, and a cancel must not be lost: not inside a library's
``asyncio.wait_for`` (Python 3.11 returns the result of a call that finished in the
same loop turn as the cancel, and the process runs on), and not while we wait for a
task of our own that we cancelled."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from infra import cli, kept_cancels
from infra.bootstrap import unless_stopped


async def _cancelled_as_its_call_finishes(wait_for: object) -> str:
    """A task in ``wait_for`` (a broker call with a timeout, as aio-pika makes them),
    cancelled in the loop turn in which the call finished, before the task runs again."""
    assert callable(wait_for)
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[str] = loop.create_future()
    task = asyncio.create_task(wait_for(reply, 10))
    await asyncio.sleep(0)  # the task waits in wait_for
    reply.set_result("connected")
    task.cancel()
    try:
        return f"ran on with {await task!r}"
    except asyncio.CancelledError:
        return "cancelled"


def test_a_serving_process_keeps_a_cancel_that_lands_as_a_broker_call_finishes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Put back at the end whatever the process entry installs, for the other tests here.
    monkeypatch.setattr(asyncio, "wait_for", asyncio.wait_for)
    monkeypatch.setattr(asyncio.tasks, "wait_for", asyncio.tasks.wait_for)

    def as_aio_pika_calls_it(*args: Any) -> Any:  # looked up at each call
        return asyncio.wait_for(*args)

    outcome = cli._run_to_the_end(_cancelled_as_its_call_finishes(as_aio_pika_calls_it))

    assert outcome == "cancelled"


async def test_wait_for_keeps_the_cancel_returns_results_and_times_out() -> None:
    assert await _cancelled_as_its_call_finishes(kept_cancels.wait_for) == "cancelled"

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert await kept_cancels.wait_for(answer(), 1) == 42
    assert await kept_cancels.wait_for(answer(), None) == 42
    never = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await kept_cancels.wait_for(never, 0.01)
    assert never.cancelled()
    with pytest.raises(TimeoutError):
        await kept_cancels.wait_for(asyncio.Event().wait(), 0)
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    done.set_result("already")
    assert await kept_cancels.wait_for(done, 0) == "already"


async def test_a_cancel_while_a_stopped_connect_closes_is_kept() -> None:
    """``unless_stopped`` cancels the connect when stopping is set and waits for it to
    close its half-open connection. A cancel of its caller during that wait is the
    caller's own, and must end the caller, not be taken for the connect's."""
    stopping = asyncio.Event()
    closing = asyncio.Event()
    closed = asyncio.Event()

    async def connect() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            closing.set()
            await closed.wait()  # closing what it opened takes a moment
            raise
        return "connection"

    caller = asyncio.create_task(unless_stopped(connect(), stopping))
    await asyncio.sleep(0)
    stopping.set()
    await closing.wait()
    caller.cancel()
    await asyncio.sleep(0)
    closed.set()

    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_cancel_and_wait_ends_the_task_and_retrieves_its_failure() -> None:
    async def fails_as_it_stops() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("closing failed")

    task = asyncio.create_task(fails_as_it_stops())
    await asyncio.sleep(0)
    await kept_cancels.cancel_and_wait(task)
    assert task.done()
    assert isinstance(task.exception(), RuntimeError)


async def test_a_caller_cancelled_while_waiting_leaves_no_failure_unretrieved() -> None:
    """The caller's cancel is raised at once; the task ends on its own afterwards, and
    its failure is retrieved: asyncio logs none as never retrieved."""
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    closing = asyncio.Event()

    async def fails_after_a_while() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await closing.wait()
            raise RuntimeError("closing failed")

    task = asyncio.create_task(fails_after_a_while())
    await asyncio.sleep(0)
    caller = asyncio.create_task(kept_cancels.cancel_and_wait(task))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    closing.set()
    await asyncio.wait({task})
    del task
    gc.collect()
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert unretrieved == []
