"""A tenant's jobs across its cases (the dashboard's list), in the in-memory view,
and the last hour's figures as the queues page receives them."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from domain.ledger import JobLedger
from domain.origin import Origin
from projections.figures import MINUTES, collect
from projections.memory import MemoryJobView
from projections.projection import TenantFilter
from tests.unit.test_projection import project_ledger

ORIGIN = Origin(actor="alice", correlation_id="corr-1", traceparent="")
WORKER = Origin(actor="worker-1", correlation_id="corr-1", traceparent="")


@pytest.fixture
def ledger() -> JobLedger:
    return JobLedger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def submit(ledger: JobLedger, tenant: str, case_id: str, job_type: str = "segment") -> UUID:
    job_id = uuid4()
    ledger.submit_job(
        job_id=job_id,
        tenant=tenant,
        case_id=case_id,
        job_type=job_type,
        params={},
        pool="default",
        max_attempts=1,
        origin=ORIGIN,
    )
    return job_id


def test_a_tenants_listing_spans_its_cases_newest_first_and_only_its_own(
    ledger: JobLedger,
) -> None:
    first = submit(ledger, "clinic-a", "case-1")
    theirs = submit(ledger, "clinic-b", "case-1")
    second = submit(ledger, "clinic-a", "case-2", "process")
    third = submit(ledger, "clinic-a", "case-1")
    ledger.start_job(third, 1, "w1", WORKER)
    ledger.fail_attempt(third, "broken", retryable=False, retry_delay_s=None, origin=WORKER)
    view = MemoryJobView()
    project_ledger(view, ledger)

    def listed(where: TenantFilter | None = None) -> list[UUID]:
        return [r.job_id for r in view.list_tenant("clinic-a", where or TenantFilter()).rows]

    assert listed() == [third, second, first]
    assert theirs not in listed()
    assert listed(TenantFilter(case_id="case-1")) == [third, first]
    assert listed(TenantFilter(job_type="process")) == [second]
    assert listed(TenantFilter(status="failed")) == [third]
    assert listed(TenantFilter(status="queued", case_id="case-1")) == [first]
    at = view.get(second)
    assert at is not None
    assert listed(TenantFilter(since=at.submitted_at)) == [third, second]
    assert listed(TenantFilter(until=at.submitted_at)) == [second, first]
    page = view.list_tenant("clinic-a", TenantFilter(), limit=2)
    assert page.next_cursor is not None
    rest = view.list_tenant("clinic-a", TenantFilter(), cursor=page.next_cursor, limit=2)
    assert [r.job_id for r in rest.rows] == [first] and rest.next_cursor is None


def test_the_figures_name_every_pool_and_place_each_count_in_its_minute() -> None:
    counts = [
        {"pool": "default", "what": "submitted", "minute": MINUTES - 1, "n": 7},
        {"pool": "default", "what": "failed", "minute": 0, "n": 2},
        {"pool": "", "what": "succeeded", "minute": 3, "n": 1},  # a type no longer registered
        {"pool": "default", "what": "submitted", "minute": MINUTES, "n": 9},  # past the hour
    ]
    waits = [{"pool": "default", "p50": 0.04, "p95": 0.5}]
    figures = collect(counts, waits, {"segment": "default", "render": "gpu"})
    assert set(figures) == {"default", "gpu", ""}
    assert figures["default"].series["submitted"][-1] == 7
    assert sum(figures["default"].series["submitted"]) == 7
    assert figures["default"].series["failed"][0] == 2
    assert figures["default"].wait_p95_s == 0.5
    assert figures["gpu"].wait_p50_s is None and sum(figures["gpu"].series["waiting"]) == 0
    assert figures[""].series["succeeded"][3] == 1
