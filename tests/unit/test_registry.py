"""JobRegistry: typed job types, their names, their params, and run_job."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import BaseModel, Field

from consumers import JobCancelled, JobContext, JobRegistry, PermanentError
from consumers.registry import RESERVED
from consumers.testing import run_job
from dental.jobs import registry as dental
from domain.errors import InvalidParams, LedgerError, UnknownJobType
from domain.retry import RetryPolicy


class Params(BaseModel):
    scan_id: str
    count: int = Field(default=1, ge=1)


async def async_handler(ctx: JobContext, params: Params) -> dict[str, Any]:
    return {"scan_id": params.scan_id}


def sync_handler(ctx: JobContext, params: Params) -> dict[str, Any]:
    return {"count": params.count}


def untyped_handler(ctx, params):  # type: ignore[no-untyped-def]
    return {}


def dict_handler(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    return {}


def one_arg_handler(ctx: JobContext) -> dict[str, Any]:
    return {}


def three_arg_handler(ctx: JobContext, params: Params, extra: int) -> dict[str, Any]:
    return {}


# -- registering ------------------------------------------------------------------------


def test_a_handler_is_registered_with_the_params_model_of_its_signature() -> None:
    registry = JobRegistry()

    job_type = registry.add(
        async_handler, name="scan", pool="gpu", retry=RetryPolicy(max_attempts=5)
    )

    assert job_type.name == "scan"
    assert job_type.handler is async_handler
    assert job_type.params_model is Params
    assert job_type.pool == "gpu"
    assert job_type.max_attempts == 5
    assert job_type.is_async is True
    assert registry.get("scan") is job_type
    assert registry.names() == ["scan"]


def test_the_decorator_registers_under_the_function_name_by_default() -> None:
    registry = JobRegistry()

    decorated = registry.job()(sync_handler)
    registry.job("renamed", pool="cpu")(async_handler)

    assert decorated is sync_handler
    assert registry.names() == ["renamed", "sync_handler"]
    sync_type = registry.get("sync_handler")
    assert sync_type.is_async is False
    assert sync_type.pool == "default"
    assert sync_type.max_attempts is None
    assert registry.get("renamed").pool == "cpu"


@pytest.mark.parametrize(
    "handler",
    [untyped_handler, dict_handler, one_arg_handler, three_arg_handler],
    ids=["no-annotations", "dict-params", "one-parameter", "three-parameters"],
)
def test_a_handler_without_a_pydantic_params_model_is_refused(handler: Any) -> None:
    registry = JobRegistry()

    with pytest.raises(TypeError, match="must take"):
        registry.add(handler, name="bad")

    assert registry.names() == []


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Segment",
        "1segment",
        "_segment",
        "seg-ment",
        "seg ment",
        "segmént",
        "a" * 64,
        *sorted(RESERVED),
    ],
)
def test_an_invalid_or_reserved_name_is_refused(name: str) -> None:
    registry = JobRegistry()

    with pytest.raises(ValueError, match="must match"):
        registry.add(sync_handler, name=name)

    assert registry.names() == []


@pytest.mark.parametrize("name", ["cancel", "retry", "events", "jobs", "progress"])
def test_the_names_of_the_gateways_job_routes_are_reserved(name: str) -> None:
    with pytest.raises(ValueError, match="must match"):
        JobRegistry().add(sync_handler, name=name)


@pytest.mark.parametrize("name", ["a", "segment", "scan_2", "a" * 63, "x_"])
def test_a_lowercase_name_of_up_to_63_characters_is_accepted(name: str) -> None:
    registry = JobRegistry()

    registry.add(sync_handler, name=name)

    assert registry.names() == [name]


def test_a_name_with_a_trailing_newline_is_refused() -> None:
    registry = JobRegistry()

    with pytest.raises(ValueError, match="must match"):
        registry.add(sync_handler, name="segment\n")


def test_registering_a_name_twice_is_refused() -> None:
    registry = JobRegistry()
    registry.add(sync_handler, name="scan")

    with pytest.raises(ValueError, match="already registered"):
        registry.add(async_handler, name="scan")

    assert registry.get("scan").handler is sync_handler


# -- validating -------------------------------------------------------------------------


def test_validating_an_unknown_job_type_lists_the_registered_ones() -> None:
    registry = JobRegistry()
    registry.add(sync_handler, name="zeta")
    registry.add(async_handler, name="alpha")

    with pytest.raises(UnknownJobType) as raised:
        registry.validate("segmentation", {"scan_id": "s"})

    assert isinstance(raised.value, LedgerError)
    assert raised.value.name == "segmentation"
    assert raised.value.registered == ["alpha", "zeta"]
    assert "'segmentation'" in str(raised.value)
    assert "alpha, zeta" in str(raised.value)


def test_an_unknown_job_type_in_an_empty_registry_says_none_are_registered() -> None:
    with pytest.raises(UnknownJobType, match="registered: none"):
        JobRegistry().get("segment")


def test_valid_params_come_back_in_json_form_with_defaults() -> None:
    assert dental.validate("segment", {"scan_id": "scan-1", "teeth": [11, "12"]}) == {
        "scan_id": "scan-1",
        "teeth": [11, 12],
        "stage_s": 0.2,
        "fail": False,
    }


def test_invalid_params_are_refused_with_the_location_of_each_error() -> None:
    with pytest.raises(InvalidParams) as raised:
        dental.validate("segment", {"scan_id": "no spaces!", "stage_s": -1, "teeth": ["x"]})

    error = raised.value
    assert isinstance(error, LedgerError)
    assert error.job_type == "segment"
    assert "'segment'" in str(error)
    assert sorted(tuple(e["loc"]) for e in error.errors) == [  # type: ignore[arg-type]
        ("scan_id",),
        ("stage_s",),
        ("teeth", 0),
    ]
    for e in error.errors:
        assert set(e) == {"loc", "msg", "type"}
        assert isinstance(e["msg"], str)
        assert e["msg"]


def test_missing_params_are_reported_as_missing() -> None:
    with pytest.raises(InvalidParams) as raised:
        dental.validate("segment", {})

    assert raised.value.errors == [{"loc": ["scan_id"], "msg": "Field required", "type": "missing"}]


# -- running with run_job ---------------------------------------------------------------


def test_the_dental_registry_declares_segment_as_async_and_process_as_blocking() -> None:
    assert dental.names() == ["process", "segment"]
    assert dental.get("segment").is_async is True
    assert dental.get("process").is_async is False


def test_running_segment_returns_its_masks_and_reports_every_stage() -> None:
    run = run_job(dental, "segment", {"scan_id": "s1", "stage_s": 0}, case_id="case-7")

    assert run.succeeded
    assert run.error is None
    assert isinstance(run.result, dict)
    assert re.fullmatch(r"[0-9a-f]{16}", run.result["mask_id"])
    assert run.result["teeth"] == list(range(11, 49))
    assert run.progress == [
        (20, "load scan"),
        (40, "denoise"),
        (60, "segment teeth"),
        (80, "build meshes"),
        (100, "store masks"),
    ]
    assert run.progress[-1] == (100, "store masks")
    assert run.context is not None
    assert run.context.case_id == "case-7"


def test_segment_masks_depend_on_the_case_and_scan() -> None:
    def mask(case_id: str, scan_id: str) -> str:
        run = run_job(dental, "segment", {"scan_id": scan_id, "stage_s": 0}, case_id=case_id)
        return str(run.result["mask_id"])

    assert mask("c1", "s1") == mask("c1", "s1")
    assert mask("c1", "s1") != mask("c2", "s1")
    assert mask("c1", "s1") != mask("c1", "s2")


def test_segment_returns_only_the_requested_teeth() -> None:
    run = run_job(dental, "segment", {"scan_id": "s1", "stage_s": 0, "teeth": [11, 21]})

    assert run.result["teeth"] == [11, 21]


def test_a_failing_segment_records_a_permanent_error_at_the_third_stage() -> None:
    run = run_job(dental, "segment", {"scan_id": "s1", "stage_s": 0, "fail": True})

    assert not run.succeeded
    assert isinstance(run.error, PermanentError)
    assert "segment teeth" in str(run.error)
    assert run.result is None
    assert run.progress == [(20, "load scan"), (40, "denoise")]


def test_running_process_reports_one_progress_value_per_step() -> None:
    run = run_job(dental, "process", {"steps": 3, "step_s": 0})

    assert run.succeeded
    assert run.progress == [(33, "step 1/3"), (66, "step 2/3"), (100, "step 3/3")]
    assert run.result == {"steps": 3, "checksum": 0}


def test_a_cancelled_process_stops_before_its_first_step() -> None:
    run = run_job(dental, "process", {"steps": 3, "step_s": 0}, cancelled=True)

    assert not run.succeeded
    assert isinstance(run.error, JobCancelled)
    assert run.progress == []
    assert run.result is None
    assert run.context is not None
    assert run.context.cancelled


def test_run_job_validates_params_like_the_gateway() -> None:
    with pytest.raises(InvalidParams):
        run_job(dental, "process", {"steps": 0})
    with pytest.raises(UnknownJobType):
        run_job(dental, "nope", {})


def test_run_job_passes_the_job_identity_to_the_handler() -> None:
    run = run_job(dental, "process", {"steps": 1, "step_s": 0}, tenant="t9", attempt=3)

    ctx = run.context
    assert ctx is not None
    assert (ctx.job_type, ctx.tenant, ctx.attempt) == ("process", "t9", 3)
    assert not ctx.cancelled
