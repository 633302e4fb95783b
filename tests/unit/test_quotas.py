"""Per-tenant quotas on submitting."""

from __future__ import annotations

import pytest

from application.quotas import Quota, QuotaExceeded, TenantQuotas, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_tenant_over_its_rate_is_refused_with_when_to_come_back_and_others_are_not() -> None:
    clock = Clock()
    quotas = TenantQuotas(
        Quota(), {"flood": Quota(submits_per_s=2, burst=3)}, lambda t: 0, clock=clock
    )
    for _ in range(3):
        quotas.admit("flood")
    with pytest.raises(QuotaExceeded) as refused:
        quotas.admit("flood")
    assert refused.value.retry_after_s == pytest.approx(0.5)
    assert retry_after(refused.value.retry_after_s) == "1"
    for _ in range(100):
        quotas.admit("quiet")  # no quota of its own, and the default has none
    clock.now = 0.5
    quotas.admit("flood")  # one token back


def test_a_batch_takes_as_many_tokens_as_it_has_jobs() -> None:
    quotas = TenantQuotas(Quota(submits_per_s=10, burst=10), {}, lambda t: 0, clock=Clock())
    quotas.admit("t", jobs=8)
    with pytest.raises(QuotaExceeded):
        quotas.admit("t", jobs=3)
    quotas.admit("t", jobs=2)


def test_jobs_waiting_are_counted_from_the_view_and_what_was_admitted_since() -> None:
    clock = Clock()
    counted: list[str] = []

    def waiting(tenant: str) -> int:
        counted.append(tenant)
        return 8

    quotas = TenantQuotas(Quota(max_waiting=10), {}, waiting, clock=clock)
    quotas.admit("t")
    quotas.admit("t")
    with pytest.raises(QuotaExceeded, match="10 jobs waiting, at most 10"):
        quotas.admit("t")  # 8 in the view, 2 admitted since: no view read yet
    assert counted == ["t"]
    clock.now = 1.0
    with pytest.raises(QuotaExceeded):
        quotas.admit("t", jobs=3)  # read again: 8 + 3 > 10
    assert counted == ["t", "t"]
