"""Process-run jobs: forked by the worker's zygote, which imported their module once,
so their limits measure the handler; and no job process outlives its worker."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.integration.conftest import (
    Stack,
    eventually,
    kill_the_worker,
    start_workers,
    submit,
    wait_for_status,
)


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has finished running)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "zombie" not in state


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def pid_written(path: Path) -> int | None:
    text = path.read_text() if path.exists() else ""
    return int(text) if text else None


def test_a_process_job_is_forked_from_a_process_that_imported_its_module_once(
    stack: Stack,
) -> None:
    [worker] = start_workers(stack)
    with stack.client() as client:
        jobs = [submit(client, "whoami", {}) for _ in range(2)]
        results = [wait_for_status(client, job["id"])["result"] for job in jobs]

    first, second = results
    assert first["pid"] != second["pid"]
    # Both were forked by one zygote, which imported the job module: neither did.
    assert first["imported_in"] == second["imported_in"] == first["parent"] == second["parent"]
    assert first["pid"] != first["imported_in"] != worker.pid
    assert parent_of(first["imported_in"]) == worker.pid
    # It imported none of the worker's own libraries: no broker, ledger or telemetry.
    assert first["worker_libraries"] == second["worker_libraries"] == []


def test_the_memory_cap_measures_the_handler_not_the_process_it_starts_in(stack: Stack) -> None:
    start_workers(stack)
    with stack.client() as client:
        fits = submit(client, "hog", {"megabytes": 280})  # under hog's cap of 300 MB
        too_big = submit(client, "hog", {"megabytes": 400})
        fitted = wait_for_status(client, fits["id"], timeout_s=60)
        failed = wait_for_status(client, too_big["id"], timeout_s=60)

    assert fitted["status"] == "succeeded", fitted["error"]
    assert fitted["result"] == {"allocated": 280 * 1024 * 1024}
    assert failed["status"] == "failed"
    assert failed["error"] == "memory limit of 300 MB exceeded"


@pytest.mark.faults
def test_a_worker_killed_with_sigkill_leaves_no_job_process_running(
    stack: Stack, tmp_path: Path
) -> None:
    [doomed] = start_workers(stack)
    with stack.client() as client:
        job = submit(client, "linger", {"pid_dir": str(tmp_path), "seconds": 60})
        pid = eventually(lambda: pid_written(tmp_path / "1"), 30, "the job's pid")
        assert running(pid)
        kill_the_worker(stack, doomed)
        eventually(lambda: not running(pid), 10, f"the job's process {pid} to end")

        start_workers(stack)  # the job is not lost: another worker runs it again
        again = eventually(lambda: pid_written(tmp_path / "2"), 60, "the second attempt")
        client.post(f"/jobs/{job['id']}/cancel")
        done = wait_for_status(client, job["id"], timeout_s=30)
    assert done["status"] == "cancelled"
    assert eventually(lambda: not running(again), 10, "the second attempt's process to end")


def test_a_killed_zygote_fails_its_running_attempts_and_the_next_one_gets_a_new_zygote(
    stack: Stack, tmp_path: Path
) -> None:
    start_workers(stack)
    with stack.client() as client:
        job = submit(client, "linger", {"pid_dir": str(tmp_path), "seconds": 60})
        pid = eventually(lambda: pid_written(tmp_path / "1"), 30, "the job's pid")
        zygote = parent_of(pid)
        os.kill(zygote, signal.SIGKILL)
        eventually(lambda: not running(pid), 10, f"the job's process {pid} to end")

        second = eventually(lambda: pid_written(tmp_path / "2"), 60, "the second attempt")
        assert parent_of(second) != zygote
        client.post(f"/jobs/{job['id']}/cancel")
        done = wait_for_status(client, job["id"], timeout_s=30)
        events = client.get(f"/jobs/{job['id']}/events").json()

    assert done["status"] == "cancelled"
    [failed] = [e for e in events if e["type"] == "AttemptFailed"]
    assert "zygote" in failed["data"]["error"]
