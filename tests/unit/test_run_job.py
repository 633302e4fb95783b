"""consumers.testing.run_job validates as the stack does: what the gateway refuses, it
refuses; what the worker fails, it fails; and it runs in async tests too."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from consumers import JobContext, JobRegistry, PermanentError
from consumers.testing import run_job, run_job_async
from dental.jobs import registry as dental
from domain.errors import InvalidParams

helpers = JobRegistry()


class Stamp(BaseModel):
    label: str = "x"


@helpers.job("stamp")
async def stamp(ctx: JobContext, params: Stamp) -> dict[str, object]:
    return {"label": params.label, "at": datetime.now(UTC)}  # a datetime is not JSON


@helpers.job("nothing")
def nothing(ctx: JobContext, params: Stamp) -> None:
    ctx.progress(100, "done")


def test_an_unknown_param_is_refused_as_the_gateway_refuses_it() -> None:
    with pytest.raises(InvalidParams) as refused:
        run_job(dental, "process", {"steps": 1, "step_s": 0, "stpes": 2})
    assert refused.value.errors[0]["loc"] == ["stpes"]


def test_a_result_that_is_not_json_fails_for_good_as_the_worker_fails_it() -> None:
    run = run_job(helpers, "stamp", {"label": "a"})
    assert not run.succeeded
    assert isinstance(run.error, PermanentError)
    assert "not JSON" in str(run.error)


def test_the_result_is_what_the_ledger_stores() -> None:
    run = run_job(helpers, "nothing", {})
    assert run.succeeded and run.result == {}
    assert run.progress == [(100, "done")]


async def test_async_tests_run_jobs_on_their_own_loop() -> None:
    segment = await run_job_async(dental, "segment", {"scan_id": "s1", "stage_s": 0})
    assert segment.succeeded and segment.progress[-1] == (100, "store masks")
    blocking = await run_job_async(dental, "process", {"steps": 2, "step_s": 0})
    assert blocking.result == {"steps": 2, "checksum": 0}
    failed = await run_job_async(helpers, "stamp", {})
    assert isinstance(failed.error, PermanentError)
    with pytest.raises(InvalidParams):
        await run_job_async(dental, "segment", {"scan_id": "s1", "extra": 1})
