"""Submitting a job: validate its params against its type, name it (an idempotency
key names the same job every time, within its tenant), append it to the ledger."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from application.quotas import TenantQuotas
from domain.errors import DuplicateSubmission, JobNotFound
from domain.job import Job
from domain.ledger import JobLedger
from domain.origin import Origin

IDEMPOTENCY_NAMESPACE = UUID("6f1c2a52-3f1e-4a8e-9d7b-1f0c8e1f9a10")


class SubmittableType(Protocol):
    @property
    def pool(self) -> str: ...

    @property
    def max_attempts(self) -> int | None: ...


class SubmittableTypes(Protocol):
    def get(self, name: str) -> SubmittableType:
        """Raises domain.errors.UnknownJobType."""
        ...

    def validate(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """The params as a client may submit them (unknown fields refused), in the
        JSON form the handler will be given; raises UnknownJobType or InvalidParams."""
        ...


@dataclass(frozen=True)
class Submitted:
    job: Job
    position: int  # the ledger position of its Submitted; 0 when it existed already
    created: bool


class Submissions:
    def __init__(
        self,
        ledger: JobLedger,
        job_types: SubmittableTypes,
        default_max_attempts: int,
        quotas: TenantQuotas | None = None,
    ) -> None:
        self.ledger = ledger
        self.job_types = job_types
        self.default_max_attempts = default_max_attempts
        self.quotas = quotas

    @staticmethod
    def job_id(tenant: str, idempotency_key: str | None) -> UUID:
        """A new id, or the one an idempotency key always names within its tenant."""
        if idempotency_key:
            return uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{tenant}\n{idempotency_key}")
        return uuid.uuid4()

    def submit(
        self,
        *,
        job_id: UUID,
        tenant: str,
        case_id: str,
        job_type: str,
        params: dict[str, Any],
        origin: Origin,
    ) -> Submitted:
        """Append the job, within the tenant's quota (else QuotaExceeded). Submitted
        again under the same id (its idempotency key),
        the job there is the answer, if it is this tenant's and of this type and case;
        another tenant's is JobNotFound, another type's or case's DuplicateSubmission."""
        normalised = self.job_types.validate(job_type, params)
        kind = self.job_types.get(job_type)
        if self.quotas is not None:
            self.quotas.admit(tenant)  # raises QuotaExceeded
        try:
            committed = self.ledger.submit_job(
                job_id=job_id,
                tenant=tenant,
                case_id=case_id,
                job_type=job_type,
                params=normalised,
                pool=kind.pool,
                max_attempts=kind.max_attempts or self.default_max_attempts,
                origin=origin,
            )
        except DuplicateSubmission:
            job = self.ledger.get_job(job_id)
            if job.tenant != tenant:
                raise JobNotFound from None
            if (job.job_type, job.case_id) != (job_type, case_id):
                raise
            return Submitted(job, 0, created=False)
        return Submitted(committed.job, committed.position, created=True)
