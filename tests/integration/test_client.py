"""The Python client (``client/``) against the real stack: submit, wait, result,
progress, cancel, retry, listings, batches, idempotency and typed errors, blocking
and asyncio; and a followed stream that survives its connection being cut."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import client._core
from client import (
    AsyncClient,
    Client,
    Conflict,
    ErrorEvent,
    Forbidden,
    JobCancelled,
    JobFailed,
    JobSpec,
    NotFound,
    ProgressEvent,
    Rejected,
    ResultEvent,
    StatusEvent,
    StreamEvent,
    Unauthorized,
    WaitTimeout,
)
from tests.faults import TcpProxy
from tests.integration.conftest import Stack, eventually

# Its tests that take ``running`` keep to jobs, cases and tenants of their own.
pytestmark = pytest.mark.shared_stack


def jobs_client(stack: Stack, url: str | None = None, **token: Any) -> Client:
    return Client(url or stack.url, stack.token(**token), timeout=30)


def assert_whole_history(events: list[StreamEvent], history: list[str]) -> None:
    positions = [e.position for e in events]
    assert positions == sorted(set(positions)), positions  # no duplicate, in order
    assert [e.type for e in events] == history  # no gap


def test_submit_wait_result_progress_listing_and_idempotency(running: Stack) -> None:
    with jobs_client(running) as jobs:
        echo = jobs.submit("echo", "client-case", {"text": "hello"}, correlation_id="corr-c1")
        assert echo.created is True
        assert echo.result(timeout=30) == {"echo": "hello", "attempt": 1}
        done = echo.wait(timeout=5)
        assert done.status == "succeeded" and done.finished
        assert done.correlation_id == "corr-c1"

        nap = jobs.submit("nap", "client-case", {"seconds": 0.5})
        events = list(nap.progress())
        history = [e.type for e in nap.events()]
        assert_whole_history(events, history)
        assert isinstance(events[0], StatusEvent) and events[0].type == "Submitted"
        progress = [e for e in events if isinstance(e, ProgressEvent)]
        assert (progress[-1].percent, progress[-1].message) == (100, "nap 10/10")
        last = events[-1]
        assert isinstance(last, ResultEvent) and last.terminal
        assert last.result == {"slept": 0.5} and last.status == "succeeded"
        # A stream resumed after its last event has nothing more.
        assert list(nap.progress(after=last.position)) == []

        first = jobs.submit("echo", "client-case", {"text": "once"}, idempotency_key="key-1")
        again = jobs.submit("echo", "client-case", {"text": "once"}, idempotency_key="key-1")
        assert again.id == first.id and again.created is False

        # Listings include this client's own writes at once (X-Ledger-Position).
        listed = [j.id for j in jobs.jobs("client-case")]
        assert listed[0] == first.id and set(listed) == {echo.id, nap.id, first.id}
        first.wait(timeout=30)
        # The view follows the worker's writes a moment later: the listing catches up.
        everyone = {echo.id, nap.id, first.id}
        eventually(
            lambda: (
                {j.id for j in jobs.jobs("client-case", status="succeeded", page_size=1)}
                == everyone
            ),
            10,
            "the view to list every job succeeded",
        )
        assert list(jobs.jobs("client-case", status="failed")) == []


def test_failure_retry_cancel_timeout_and_typed_errors(running: Stack) -> None:
    with jobs_client(running) as jobs:
        failing = jobs.submit("fail", "client-bad", {"message": "no scan"})
        with pytest.raises(JobFailed) as failed:
            failing.result(timeout=30)
        assert failed.value.error == "PermanentError: no scan"
        assert failed.value.traceback.startswith("Traceback (most recent call last):")
        assert "in fail" in failed.value.traceback
        assert failed.value.job.status == "failed"
        errors = [e for e in failing.progress() if isinstance(e, ErrorEvent)]
        assert errors[-1].type == "Failed" and errors[-1].error == failed.value.error

        retried = failing.retry()
        assert retried.status == "queued"
        with pytest.raises(JobFailed):
            failing.result(timeout=30)
        assert failing.get().attempt == 2
        with pytest.raises(Conflict) as finished:
            failing.cancel()
        assert finished.value.job_status == "failed"

        spinning = jobs.submit("spin", "client-bad", {"seconds": 30})
        with pytest.raises(WaitTimeout) as slow:
            spinning.wait(timeout=0.5)
        assert isinstance(slow.value, TimeoutError)
        next(e for e in spinning.progress() if isinstance(e, ProgressEvent))  # it runs
        assert spinning.cancel().cancel_requested
        with pytest.raises(JobCancelled) as cancelled:
            spinning.result(timeout=30)
        assert cancelled.value.job.status == "cancelled"

        with pytest.raises(NotFound):
            jobs.get(str(uuid.uuid4()))
        with pytest.raises(NotFound):
            jobs.handle(str(uuid.uuid4())).result(timeout=5)
        with pytest.raises(Rejected) as unknown:
            jobs.submit("no_such_type", "client-bad")
        assert unknown.value.registered is not None and "echo" in unknown.value.registered
        with pytest.raises(Rejected) as invalid:
            jobs.submit("echo", "client-bad", {"text": "x", "extra": 1})
        assert "body.params.extra" in invalid.value.reason

    # Another tenant's job is not found, as an unknown one; a missing scope is refused.
    with jobs_client(running, tenant="another-clinic") as other:
        with pytest.raises(NotFound):
            other.get(failing.id)
        with pytest.raises(NotFound):
            other.handle(failing.id).retry()
        assert list(other.jobs("client-bad")) == []
    with jobs_client(running, scopes=("jobs:read",)) as reader:
        with pytest.raises(Forbidden) as forbidden:
            reader.submit("echo", "client-bad", {"text": "x"})
        assert forbidden.value.status == 403
        assert reader.get(failing.id).status == "failed"
    with Client(running.url, running.token(ttl_s=-120)) as expired:
        with pytest.raises(Unauthorized) as refused:
            expired.get(failing.id)
        assert isinstance(refused.value, Forbidden) and "expired" in refused.value.reason


def test_submit_many_splits_into_batches_in_order(
    running: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client._core, "BATCH_LIMIT", 2)  # 5 jobs: three requests
    specs = [JobSpec("echo", "client-many", {"text": str(n)}, f"many-{n}") for n in range(5)]
    with jobs_client(running) as jobs:
        handles = jobs.submit_many(specs)
        assert all(h.created for h in handles) and len({h.id for h in handles}) == 5
        assert [h.result(timeout=30)["echo"] for h in handles] == ["0", "1", "2", "3", "4"]
        again = jobs.submit_many(
            [
                {"type": "echo", "case_id": "client-many", **s}
                for s in (
                    {"params": {"text": "0"}, "idempotency_key": "many-0"},
                    {"params": {"text": "new"}},
                )
            ]
        )
        assert again[0].id == handles[0].id and again[0].created is False
        assert again[1].created is True
        bad = [*specs[:3], JobSpec("echo", "client-many", {"nope": 1})]
        with pytest.raises(Rejected) as refused:
            jobs.submit_many(bad)
        # Named by its index in the whole list, not in the request that carried it.
        assert {tuple(e["loc"][:3]) for e in refused.value.errors} == {("body", "jobs", 3)}


async def test_the_async_client_mirrors_the_blocking_one(running: Stack) -> None:
    async with AsyncClient(running.url, running.token(), timeout=30) as jobs:
        nap = await jobs.submit("nap", "client-async", {"seconds": 0.3})
        events = [e async for e in nap.progress()]
        assert_whole_history(events, [e.type for e in await nap.events()])
        assert await nap.result(timeout=30) == {"slept": 0.3}

        failing = await jobs.submit("fail", "client-async", {"message": "async"})
        with pytest.raises(JobFailed) as failed:
            await failing.result(timeout=30)
        assert "PermanentError: async" in failed.value.traceback
        assert (await failing.retry()).status == "queued"
        with pytest.raises(JobFailed):
            await failing.result(timeout=30)

        spinning = await jobs.submit("spin", "client-async", {"seconds": 30})
        with pytest.raises(WaitTimeout):
            await spinning.wait(timeout=0.3)
        await spinning.cancel()
        with pytest.raises(JobCancelled):
            await spinning.result(timeout=30)

        batch = await jobs.submit_many(
            [JobSpec("echo", "client-async", {"text": str(n)}) for n in range(3)]
        )
        assert [(await h.wait(timeout=30)).status for h in batch] == ["succeeded"] * 3
        listed = [j.id async for j in jobs.jobs("client-async")]
        assert set(listed) == {nap.id, failing.id, spinning.id, *(h.id for h in batch)}
        with pytest.raises(NotFound):
            await jobs.get(str(uuid.uuid4()))


def test_progress_resumes_after_the_connection_is_cut_with_no_gap_and_no_duplicate(
    running: Stack,
) -> None:
    broken: list[tuple[Exception | None, float]] = []
    port = int(running.env["JOBLEDGER_GATEWAY__PORT"])
    with (
        TcpProxy("127.0.0.1", port) as proxy,
        jobs_client(running, url=f"http://127.0.0.1:{proxy.port}") as jobs,
    ):
        nap = jobs.submit("nap", "client-cut", {"seconds": 2.0})
        seen: list[StreamEvent] = []
        # At 20 % or the first report past it: the worker writes the newest report an
        # interval, so on a busy machine 20 itself may never be written.
        cut_points = [20]
        for event in nap.progress(on_reconnect=lambda *why: broken.append(why)):
            seen.append(event)
            if isinstance(event, ProgressEvent) and cut_points and event.percent >= cut_points[0]:
                proxy.cut_all()  # reset mid-job: the client reconnects
                cut_points.pop(0)
        history = [e.type for e in nap.events()]
    assert [pause for _, pause in broken] == [0.25], broken  # one cut, one reconnect
    cut_at = next(i for i, e in enumerate(seen) if isinstance(e, ProgressEvent))
    assert len(seen) > cut_at + 5, "the job was over before the cut"
    assert_whole_history(seen, history)
    assert isinstance(seen[-1], ResultEvent)


async def test_async_progress_resumes_after_the_connection_is_cut(
    running: Stack,
) -> None:
    broken: list[tuple[Exception | None, float]] = []
    port = int(running.env["JOBLEDGER_GATEWAY__PORT"])
    with TcpProxy("127.0.0.1", port) as proxy:
        async with AsyncClient(f"http://127.0.0.1:{proxy.port}", running.token()) as jobs:
            nap = await jobs.submit("nap", "client-cut", {"seconds": 1.5})
            seen: list[StreamEvent] = []
            cuts = 0
            cut_points = [20, 60]  # or the first report past each (see the test above)
            async for event in nap.progress(on_reconnect=lambda *why: broken.append(why)):
                seen.append(event)
                if (
                    isinstance(event, ProgressEvent)
                    and cut_points
                    and event.percent >= cut_points[0]
                ):
                    proxy.cut_all()
                    cut_points.pop(0)
                    cuts += 1
            history = [e.type for e in await nap.events()]
    assert cuts == 2 and [pause for _, pause in broken] == [0.25, 0.25], broken
    assert_whole_history(seen, history)
    assert isinstance(seen[-1], ResultEvent)
