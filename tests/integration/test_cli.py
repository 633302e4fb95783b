"""The commands a person runs."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.integration.conftest import Stack, eventually, submit, wait_for_status


def test_the_demo_brings_everything_up_and_shows_a_job_succeed(stack: Stack) -> None:
    # Without JOBLEDGER_APP: the shipped examples.
    result = stack.cli(
        "run", "--demo", "--exit-after-demo", timeout_s=120, without=("JOBLEDGER_APP",)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "submitted segment job" in out
    assert "started    attempt 1" in out
    assert "100%  store masks" in out
    assert out.rstrip().splitlines()[-1].split(": ")[0].endswith("succeeded")


def test_a_worker_stopped_with_sigterm_finishes_its_running_job_first(stack: Stack) -> None:
    stack.start("run", JOBLEDGER_WORKER__POOL="elsewhere")
    stack.wait_ready()
    worker = stack.start("worker")
    with stack.client() as client:
        job = submit(client, "nap", {"seconds": 1.5})
        wait_for_status(client, job["id"], {"running"})
        assert stack.stop(worker, signal.SIGTERM) == 0
        done = client.get(f"/jobs/{job['id']}").json()
    assert done["status"] == "succeeded"


def test_submit_command_waits_for_the_outcome(running: Stack) -> None:
    result = running.cli(
        "submit", "echo", "cli-case", "--param", "text=hello", "--url", running.url, "--watch"
    )
    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stdout
    with running.client() as client:
        listed = eventually(lambda: client.get("/jobs/cli-case/jobs").json()["items"], 10)
    assert listed[0]["result"] == {"echo": "hello", "attempt": 1}


def test_submit_count_sends_many_jobs_as_batches(running: Stack) -> None:
    result = running.cli(
        "submit", "echo", "cli-many", "--param", "text=x", "--count", "1500", "--url", running.url
    )
    assert result.returncode == 0, result.stderr
    assert "submitted 1500 echo jobs" in result.stdout
    with running.client() as client:
        listed = eventually(
            lambda: client.get("/jobs/cli-many/jobs", params={"limit": 200}).json()["next_cursor"],
            20,
            "the batch in the view",
        )
    assert listed


def test_submit_from_ndjson_sends_one_batch_and_names_each_job(
    running: Stack, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs.ndjson"
    jobs.write_text(
        '{"type": "echo", "case_id": "cli-nd", "params": {"text": "a"}, "idempotency_key": "a"}\n'
        "\n"
        '{"type": "echo", "case_id": "cli-nd", "params": {"text": "b"}}\n'
    )
    first = running.cli("submit", "--from", str(jobs), "--url", running.url)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[-1] == "submitted 2 jobs (0 known by their idempotency keys)"
    ids = [line.split()[0] for line in lines[:-1]]
    assert [line.split()[1:4] for line in lines[:-1]] == [["echo", "cli-nd", "queued"]] * 2
    again = running.cli("submit", "--from", str(jobs), "--url", running.url)
    assert again.returncode == 0, again.stderr
    known = again.stdout.splitlines()[0]
    assert known.startswith(f"{ids[0]}  echo  cli-nd  ") and known.endswith("  (known)")
    assert "(1 known" in again.stdout.splitlines()[-1]
    jobs.write_text('{"type": "echo", "case_id": "cli-nd", "params": {"nope": 1}}\n')
    refused = running.cli("submit", "--from", str(jobs), "--url", running.url)
    assert refused.returncode == 1
    assert "submit refused: 422 body.jobs.0.params" in refused.stderr


def test_a_bad_pool_name_is_refused_with_a_reason_not_a_traceback(stack: Stack) -> None:
    """Once, by the command itself: not by each worker process the supervisor starts."""
    for command in (("worker", "--processes", "2"), ("worker", "--processes", "1"), ("run",)):
        refused = stack.cli(*command, "--pool", "scans.fast", timeout_s=30)
        assert refused.returncode == 2, (command, refused.stderr[-2000:])
        assert "--pool (JOBLEDGER_WORKER__POOL): pool name 'scans.fast'" in refused.stderr
        assert "Traceback" not in refused.stderr


@pytest.mark.parametrize(
    ("args", "refused"),
    [
        (("gateway", "--processes", "0"), "JOBLEDGER_GATEWAY__PROCESSES: Input should be greater"),
        (("worker", "--processes", "0"), "JOBLEDGER_WORKER__PROCESSES: Input should be greater"),
        (("worker", "--concurrency", "0"), "JOBLEDGER_WORKER__CONCURRENCY: Input should be"),
    ],
)
def test_processes_or_concurrency_out_of_bounds_are_refused_by_name(
    stack: Stack, args: tuple[str, ...], refused: str
) -> None:
    result = stack.cli(*args, timeout_s=60)

    assert result.returncode == 2
    assert refused in result.stderr and "Traceback" not in result.stderr
