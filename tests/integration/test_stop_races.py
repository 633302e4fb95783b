"""A stop that lands as a process's broker connect completes ends the process at once.

aio-pika's robust connection connects in a task of its own, under Python 3.11's
``asyncio.wait_for``. Stopped while connecting, the dispatcher closes the connection,
which cancels that task; a cancel reaching it in the loop turn its connect completed
was dropped, the task slept out its 5 s reconnect interval, and the stop waited for
it (21 stops of 200 held, `bench/stop_race.py`). Every serving process now runs with
3.12's ``wait_for`` (infra/kept_cancels.py)."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.faults import AmqpConnectProxy, sigterm_at_open_ok
from tests.integration.conftest import Stack

pytestmark = pytest.mark.faults

# Where the stops were held: SIGTERM up to about a millisecond before the OpenOk
# reaches the process. Before the fix, 4, 1 and 6 stops of 24 such trials were held
# in three runs, and 10 of 48 in a fourth: 96 trials miss a held stop about once in
# sixty runs at the lowest of those rates.
OFFSETS_MS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
TRIALS = 96
HELD_S = 4.0  # a held stop waited out the 5 s reconnect interval


def test_a_dispatcher_stopped_as_its_broker_connect_completes_stops_at_once(
    stack: Stack,
) -> None:
    held: list[str] = []
    with AmqpConnectProxy() as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        for trial in range(TRIALS):
            before_s = OFFSETS_MS[trial % len(OFFSETS_MS)] / 1000
            pids: list[int] = []
            stopped_at: list[float] = []
            proxy.at_open_ok = sigterm_at_open_ok(pids, before_s, stopped_at)
            process = stack.start("dispatcher", JOBLEDGER_AMQP__URL=url)
            pids.append(process.pid)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                what = "no stop within 60 s" if stopped_at else "the dispatcher never connected"
                pytest.fail(f"{what}:\n{stack.logs[-1].read_text()[-3000:]}")
            proxy.at_open_ok = None
            assert stopped_at, stack.logs[-1].read_text()[-3000:]
            took = time.monotonic() - stopped_at[0]
            if took > HELD_S:
                held.append(f"SIGTERM {before_s * 1000:.1f} ms before the OpenOk: {took:.1f} s")
    assert not held, f"{len(held)} of {TRIALS} stops held:\n" + "\n".join(held)
