"""Progress is coalesced before it reaches the ledger: a handler may report as often
as it likes, the ledger gets at most one write per interval, and the last value."""

from __future__ import annotations

import asyncio
import threading
import time

from consumers.progress import ProgressReporter

INTERVAL_S = 0.05
REPORTS = 3_000  # in 0.3 s: 10,000 a second


class FakeLedger:
    """Records each write and takes a little time over it, like the real one."""

    def __init__(self) -> None:
        self.written: list[tuple[int, str]] = []

    async def write(self, percent: int, message: str) -> bool:
        self.written.append((percent, message))
        await asyncio.sleep(0.002)
        return False


def bound(elapsed_s: float) -> float:
    """At most one write per interval, plus the first and the final one."""
    return elapsed_s / INTERVAL_S + 2


async def test_a_handler_reporting_10000_times_a_second_writes_a_bounded_number_of_events() -> None:
    ledger = FakeLedger()
    reporter = ProgressReporter(ledger.write, interval_s=INTERVAL_S)
    started = time.monotonic()
    for n in range(REPORTS):
        reporter.report(n * 100 // REPORTS, f"step {n}")
        if n % 100 == 99:
            await asyncio.sleep(0.01)  # 100 reports every 10 ms
    elapsed = time.monotonic() - started
    await reporter.close()
    assert ledger.written[-1] == (99, f"step {REPORTS - 1}")
    assert 3 <= len(ledger.written) <= bound(elapsed), (len(ledger.written), elapsed)
    assert reporter.writes == len(ledger.written)


async def test_a_thread_handler_reporting_10000_times_a_second_writes_a_bounded_number() -> None:
    ledger = FakeLedger()
    reporter = ProgressReporter(ledger.write, interval_s=INTERVAL_S)
    report = reporter.report_threadsafe(asyncio.get_running_loop())

    def handler() -> None:
        for n in range(REPORTS):
            report(n * 100 // REPORTS, f"step {n}")
            if n % 100 == 99:
                time.sleep(0.01)

    started = time.monotonic()
    thread = threading.Thread(target=handler)
    thread.start()
    await asyncio.to_thread(thread.join)
    elapsed = time.monotonic() - started
    await reporter.close()
    assert ledger.written[-1] == (99, f"step {REPORTS - 1}")
    assert 3 <= len(ledger.written) <= bound(elapsed), (len(ledger.written), elapsed)


async def test_the_final_value_lands_even_when_reported_just_after_a_write() -> None:
    ledger = FakeLedger()
    reporter = ProgressReporter(ledger.write, interval_s=10)  # no second write in time
    reporter.report(10, "first")
    await asyncio.sleep(0.01)
    reporter.report(100, "last")
    await reporter.close()
    assert ledger.written == [(10, "first"), (100, "last")]


async def test_a_job_that_never_reports_costs_no_task_and_writes_nothing() -> None:
    ledger = FakeLedger()
    before = len(asyncio.all_tasks())
    reporter = ProgressReporter(ledger.write, interval_s=INTERVAL_S)
    assert len(asyncio.all_tasks()) == before
    await reporter.close()
    assert ledger.written == []


async def test_a_report_made_just_before_close_is_written() -> None:
    ledger = FakeLedger()
    reporter = ProgressReporter(ledger.write, interval_s=INTERVAL_S)
    reporter.report(100, "done")
    await reporter.close()
    assert ledger.written == [(100, "done")]
