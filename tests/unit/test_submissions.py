"""The submission use case, in memory: validation, idempotency within a tenant, and
the tenant's quota."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from application.quotas import Quota, QuotaExceeded, TenantQuotas
from application.submissions import BatchRefused, Submission, Submissions
from consumers import JobContext, JobRegistry
from domain.errors import DuplicateSubmission, InvalidParams, JobNotFound, UnknownJobType
from domain.ledger import JobLedger
from domain.origin import Origin

registry = JobRegistry()


class Scan(BaseModel):
    scan_id: str


@registry.job("segment", pool="gpu", max_attempts=5)
async def segment(ctx: JobContext, params: Scan) -> None:
    pass


@pytest.fixture
def submissions() -> Submissions:
    ledger = JobLedger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    return Submissions(ledger, registry, default_max_attempts=3)


def submit(s: Submissions, tenant: str = "t1", key: str | None = None, **fields: Any) -> Any:
    return s.submit(
        job_id=s.job_id(tenant, key),
        tenant=tenant,
        case_id=fields.get("case_id", "c1"),
        job_type=fields.get("job_type", "segment"),
        params=fields.get("params", {"scan_id": "s1"}),
        origin=Origin("alice"),
    )


def test_a_job_is_appended_with_its_types_pool_and_attempts(submissions: Submissions) -> None:
    submitted = submit(submissions)
    assert submitted.created and submitted.position == 1
    assert (submitted.job.pool, submitted.job.max_attempts) == ("gpu", 5)


def test_the_same_idempotency_key_names_the_same_job_within_a_tenant_only(
    submissions: Submissions,
) -> None:
    first = submit(submissions, key="k1")
    again = submit(submissions, key="k1")
    elsewhere = submit(submissions, tenant="t2", key="k1")
    assert not again.created and again.job.id == first.job.id
    assert elsewhere.created and elsewhere.job.id != first.job.id
    with pytest.raises(DuplicateSubmission):
        submit(submissions, key="k1", case_id="c2")


def test_another_tenants_job_under_a_colliding_id_is_not_found(submissions: Submissions) -> None:
    first = submit(submissions, key="k1")
    with pytest.raises(JobNotFound):
        submissions.submit(
            job_id=first.job.id,
            tenant="t2",
            case_id="c1",
            job_type="segment",
            params={"scan_id": "s1"},
            origin=Origin("mallory"),
        )


def test_unknown_types_and_unknown_params_are_refused(submissions: Submissions) -> None:
    with pytest.raises(UnknownJobType):
        submit(submissions, job_type="nope")
    with pytest.raises(InvalidParams):
        submit(submissions, params={"scan_id": "s1", "extra": 1})


def test_a_tenant_past_its_quota_is_refused_before_anything_is_appended() -> None:
    ledger = JobLedger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    quotas = TenantQuotas(Quota(submits_per_s=1, burst=2), {}, lambda t: 0)
    submissions = Submissions(ledger, registry, 3, quotas)
    submit(submissions)
    submit(submissions)
    with pytest.raises(QuotaExceeded):
        submit(submissions)
    assert ledger.recorder.max_notification_id() == 2


def test_a_batch_is_all_or_none_and_names_every_invalid_job(submissions: Submissions) -> None:
    items = [
        Submission("segment", "c1", {"scan_id": "a"}),
        Submission("nope", "c1", {}),
        Submission("segment", "c1", {"scan_id": 1}),
        Submission("segment", "c1", {"scan_id": "b"}, idempotency_key="k"),
        Submission("segment", "c1", {"scan_id": "c"}, idempotency_key="k"),
    ]
    with pytest.raises(BatchRefused) as refused:
        submissions.submit_many(tenant="t1", submissions=items, origin=Origin("alice"))
    assert [n for n, _ in refused.value.errors] == [1, 2, 4]
    assert submissions.ledger.recorder.max_notification_id() is None


def test_a_batch_answers_keyed_jobs_that_exist_and_appends_the_rest(
    submissions: Submissions,
) -> None:
    first = submit(submissions, key="k1")
    batch = submissions.submit_many(
        tenant="t1",
        submissions=[
            Submission("segment", "c1", {"scan_id": "s1"}, idempotency_key="k1"),
            Submission("segment", "c1", {"scan_id": "s2"}),
        ],
        origin=Origin("alice"),
    )
    assert (batch[0].job.id, batch[0].created) == (first.job.id, False)
    assert batch[1].created and batch[1].position > 0
    assert submissions.ledger.get_job(batch[1].job.id).case_id == "c1"
