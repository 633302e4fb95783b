"""Submitting a job: validate its params against its type, name it (an idempotency
key names the same job every time, within its tenant), append it to the ledger. A
job may be scheduled for a later time (``run_at``), within a horizon."""

from __future__ import annotations

import asyncio
import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from application.quotas import TenantQuotas
from domain.errors import DuplicateSubmission, JobNotFound, LedgerError
from domain.job import Job
from domain.ledger import JobLedger
from domain.origin import Origin

IDEMPOTENCY_NAMESPACE = UUID("6f1c2a52-3f1e-4a8e-9d7b-1f0c8e1f9a10")
HORIZON_S = 365 * 86400.0  # how far ahead a job may be scheduled, by default


class SubmittableType(Protocol):
    @property
    def pool(self) -> str: ...

    @property
    def max_attempts(self) -> int | None: ...

    @property
    def priority(self) -> str: ...


class SubmittableTypes(Protocol):
    def get(self, name: str) -> SubmittableType:
        """Raises domain.errors.UnknownJobType."""
        ...

    def validate(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """The params as a client may submit them (unknown fields refused), in the
        JSON form the handler will be given; raises UnknownJobType or InvalidParams."""
        ...


MAX_BATCH = 1000


@dataclass(frozen=True)
class Submission:
    """One job of a batch, as a client sends it."""

    job_type: str
    case_id: str
    params: dict[str, Any]
    idempotency_key: str | None = None
    run_at: datetime | None = None
    priority: str | None = None  # None: the job type's own


class BeyondHorizon(LedgerError):
    """The job is scheduled further ahead than the ledger takes jobs."""

    def __init__(self, run_at: datetime, horizon_s: float) -> None:
        super().__init__(
            f"run_at {run_at.isoformat()} is more than {horizon_s:g} s "
            f"({horizon_s / 86400:g} days) ahead: the scheduling horizon"
        )
        self.run_at = run_at
        self.horizon_s = horizon_s


class BatchRefused(LedgerError):
    """Some jobs of the batch are invalid: nothing was appended."""

    def __init__(self, errors: list[tuple[int, LedgerError]]) -> None:
        super().__init__(f"{len(errors)} of the batch's jobs are invalid; none was submitted")
        self.errors = errors


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
        horizon_s: float = HORIZON_S,
    ) -> None:
        self.ledger = ledger
        self.job_types = job_types
        self.default_max_attempts = default_max_attempts
        self.quotas = quotas
        self.horizon_s = horizon_s

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
        run_at: datetime | None = None,
        priority: str | None = None,
    ) -> Submitted:
        """Append the job, within the tenant's quota (else QuotaExceeded). Submitted
        again under the same id (its idempotency key),
        the job there is the answer, if it is this tenant's and of this type and case;
        another tenant's is JobNotFound, another type's or case's DuplicateSubmission."""
        job = self._admitted(job_id, tenant, case_id, job_type, params, origin, run_at, priority)
        try:
            committed = self.ledger.append_submitted(job)
        except DuplicateSubmission:
            return self._answer_taken(job)
        return Submitted(committed.job, committed.position, created=True)

    async def submit_async(
        self,
        *,
        job_id: UUID,
        tenant: str,
        case_id: str,
        job_type: str,
        params: dict[str, Any],
        origin: Origin,
        run_at: datetime | None = None,
        priority: str | None = None,
    ) -> Submitted:
        """``submit`` for a caller on an event loop: validated and handed to the
        ledger's writer on the loop, awaited while the batch is written; only what
        must block (a quota's count of waiting jobs, once a second; the job an
        idempotency key names) goes to a thread."""
        if not self.ledger.appends_in_background or (
            self.quotas is not None and self.quotas.counts_first(tenant)
        ):
            return await asyncio.to_thread(
                functools.partial(
                    self.submit,
                    job_id=job_id,
                    tenant=tenant,
                    case_id=case_id,
                    job_type=job_type,
                    params=params,
                    origin=origin,
                    run_at=run_at,
                    priority=priority,
                )
            )
        job = self._admitted(job_id, tenant, case_id, job_type, params, origin, run_at, priority)
        try:
            committed = await self.ledger.append_submitted_async(job)
        except DuplicateSubmission:
            return await asyncio.to_thread(self._answer_taken, job)
        return Submitted(committed.job, committed.position, created=True)

    def _admitted(
        self,
        job_id: UUID,
        tenant: str,
        case_id: str,
        job_type: str,
        params: dict[str, Any],
        origin: Origin,
        run_at: datetime | None,
        priority: str | None = None,
    ) -> Job:
        """The job, validated and within the tenant's quota, not yet appended."""
        job = self._new_job(job_id, tenant, case_id, job_type, params, origin, run_at, priority)
        if self.quotas is not None:
            self.quotas.admit(tenant)  # raises QuotaExceeded
        return job

    def _new_job(
        self,
        job_id: UUID,
        tenant: str,
        case_id: str,
        job_type: str,
        params: dict[str, Any],
        origin: Origin,
        run_at: datetime | None = None,
        priority: str | None = None,
    ) -> Job:
        """The job as submitted, its params validated (UnknownJobType, InvalidParams),
        its ``run_at`` within the horizon (BeyondHorizon; a time past runs now), at
        ``priority`` or its type's (InvalidPriority)."""
        if run_at is not None and run_at - datetime.now(UTC) > timedelta(seconds=self.horizon_s):
            raise BeyondHorizon(run_at, self.horizon_s)
        normalised = self.job_types.validate(job_type, params)
        kind = self.job_types.get(job_type)
        return Job.submit(
            job_id=job_id,
            tenant=tenant,
            case_id=case_id,
            job_type=job_type,
            params=normalised,
            pool=kind.pool,
            max_attempts=kind.max_attempts or self.default_max_attempts,
            origin=origin,
            run_at=run_at,
            priority=priority or kind.priority,
        )

    def _answer_taken(self, submitted: Job) -> Submitted:
        """The answer to a submit whose id was taken: the job there, if it is the same
        tenant's, type and case."""
        job = self.ledger.get_job(submitted.id)
        if job.tenant != submitted.tenant:
            raise JobNotFound from None
        if (job.job_type, job.case_id) != (submitted.job_type, submitted.case_id):
            raise DuplicateSubmission
        return Submitted(job, 0, created=False)

    def submit_many(
        self, *, tenant: str, submissions: list[Submission], origin: Origin
    ) -> list[Submitted]:
        """Validate every job as ``submit`` would (BatchRefused naming each invalid one,
        and nothing appended), then append them in one transaction. A job whose
        idempotency key names one already submitted is answered with that one."""
        if not 0 < len(submissions) <= MAX_BATCH:
            raise LedgerError(f"a batch holds 1 to {MAX_BATCH} jobs")
        jobs: dict[int, Job] = {}
        errors: list[tuple[int, LedgerError]] = []
        keys: dict[str, int] = {}
        for n, item in enumerate(submissions):
            key = item.idempotency_key
            if key is not None and key in keys:
                errors.append((n, LedgerError(f"the same idempotency key as job {keys[key]}")))
                continue
            if key is not None:
                keys[key] = n
            try:
                jobs[n] = self._job(tenant, item, origin)
            except LedgerError as exc:
                errors.append((n, exc))
        if errors:
            raise BatchRefused(errors)
        if self.quotas is not None:
            self.quotas.admit(tenant, len(jobs))
        answers: dict[int, Submitted] = {}
        for attempt in range(3):  # a key may name a job submitted meanwhile: answered
            # A failed save took the jobs' events: a retry submits them anew.
            fresh = {
                n: self._job(tenant, submissions[n], origin) if attempt else job
                for n, job in jobs.items()
                if n not in answers
            }
            try:
                committed = self.ledger.submit_jobs(list(fresh.values()))
            except DuplicateSubmission:
                answers.update(self._existing(tenant, submissions, fresh))
                continue
            answers.update(
                {
                    n: Submitted(c.job, c.position, created=True)
                    for n, c in zip(fresh, committed, strict=True)
                }
            )
            break
        else:
            raise DuplicateSubmission("the batch met concurrent submissions three times")
        return [answers[n] for n in range(len(submissions))]

    def _job(self, tenant: str, item: Submission, origin: Origin) -> Job:
        job_id = self.job_id(tenant, item.idempotency_key)
        return self._new_job(
            job_id,
            tenant,
            item.case_id,
            item.job_type,
            item.params,
            origin,
            item.run_at,
            item.priority,
        )

    def _existing(
        self, tenant: str, submissions: list[Submission], jobs: dict[int, Job]
    ) -> dict[int, Submitted]:
        """The batch's jobs that exist already (their keys were used before)."""
        found: dict[int, Submitted] = {}
        for n, job in jobs.items():
            if submissions[n].idempotency_key is None:
                continue
            try:
                existing = self.ledger.get_job(job.id)
            except JobNotFound:
                continue
            if existing.tenant != tenant:
                raise BatchRefused([(n, JobNotFound())])
            if (existing.job_type, existing.case_id) != (job.job_type, job.case_id):
                raise BatchRefused([(n, DuplicateSubmission())])
            found[n] = Submitted(existing, 0, created=False)
        return found
