"""The JobLedger application: one method per command, each one transaction."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import strtobool

from domain.errors import DuplicateSubmission, InvalidTransition, JobNotFound
from domain.group_commit import GroupCommit, GroupRead, ReadMany
from domain.job import Job
from domain.origin import Origin

# A command that meets a concurrent write reloads the job and decides again this
# many times before giving up; the state machine then usually refuses it.
CONFLICT_RETRIES = 5


@dataclass(frozen=True)
class Committed:
    """The job as the command left it, and the ledger position of its last event."""

    job: Job
    position: int


class JobLedger(Application[UUID]):
    """Commands on jobs. With ``GROUP_COMMIT=y`` in its environment, saves from
    concurrent callers are written together (see domain/group_commit.py)."""

    name = "JobLedger"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        self.writer: GroupCommit | None = None
        self.reader: GroupRead | None = None
        if strtobool(self.env.get("GROUP_COMMIT", "n")):
            self.writer = GroupCommit(
                self.save,
                max_batch=int(self.env.get("GROUP_COMMIT_MAX_BATCH", "500")),
                max_wait_s=float(self.env.get("GROUP_COMMIT_MAX_WAIT_S", "0.002")),
            )

    def read_together(self, read: ReadMany) -> None:
        """Read the jobs that are not in memory through ``read``, many callers' in one
        query (see domain/group_commit.py). Only where cached copies are used without
        a read (no fast-forward): a worker, which reads each job it starts."""
        if self.repository.cache is not None and not self.repository.fastforward:
            self.reader = GroupRead(read)

    def close(self) -> None:
        for batcher in (self.writer, self.reader):
            if batcher is not None:
                batcher.close()
        super().close()

    def submit_job(
        self,
        *,
        job_id: UUID,
        tenant: str,
        case_id: str,
        job_type: str,
        params: dict[str, Any],
        pool: str,
        max_attempts: int,
        origin: Origin,
        run_at: datetime | None = None,
        priority: str = "normal",
    ) -> Committed:
        job = Job.submit(
            job_id=job_id,
            tenant=tenant,
            case_id=case_id,
            job_type=job_type,
            params=params,
            pool=pool,
            max_attempts=max_attempts,
            origin=origin,
            run_at=run_at,
            priority=priority,
        )
        return self.append_submitted(job)

    def append_submitted(self, job: Job) -> Committed:
        """Append a job just submitted (``Job.submit``); DuplicateSubmission if its id
        is taken."""
        try:
            return self._commit(job)
        except IntegrityError:
            raise DuplicateSubmission from None

    @property
    def appends_in_background(self) -> bool:
        """Does ``append_submitted_later`` return before the write (group commit on)?"""
        return self.writer is not None

    def append_submitted_later(self, job: Job) -> Future[Committed]:
        """``append_submitted`` without waiting for the write, when group commit is on
        (``appends_in_background``); otherwise the write is done before it returns."""
        if self.writer is None:
            done: Future[Committed] = Future()
            try:
                done.set_result(self.append_submitted(job))
            except DuplicateSubmission as exc:
                done.set_exception(exc)
            return done
        committed: Future[Committed] = Future()

        def written(position: Future[int]) -> None:
            exc = position.exception()
            if exc is None:
                self._cached(job)
            # A caller that gave up (cancelled) is not answered; the job stands.
            with contextlib.suppress(InvalidStateError):
                if isinstance(exc, IntegrityError):
                    committed.set_exception(DuplicateSubmission())
                elif exc is not None:
                    committed.set_exception(exc)
                else:
                    committed.set_result(Committed(job, position.result()))

        self.writer.save_later(job).add_done_callback(written)
        return committed

    def submit_jobs(self, jobs: Sequence[Job]) -> list[Committed]:
        """Append many submitted jobs (``Job.submit``) in one transaction: all or none.
        DuplicateSubmission if any of their ids is taken."""
        try:
            recordings = self.save(*jobs)
        except IntegrityError:
            raise DuplicateSubmission from None
        positions: dict[UUID, int] = {}
        for recording in recordings:
            positions[recording.domain_event.originator_id] = recording.notification.id
        return [Committed(job, positions.get(job.id, 0)) for job in jobs]

    def start_job(
        self,
        job_id: UUID,
        attempt: int,
        worker_id: str,
        origin: Origin,
        delivery_id: str = "",
        *,
        loaded: Job | None = None,
    ) -> Committed:
        """``loaded``: a copy of the job the caller just read (and may be changed),
        decided on first instead of reading it again."""
        return self._change(
            job_id, lambda job: job.start(attempt, worker_id, origin, delivery_id), loaded
        )

    def report_progress(
        self,
        job_id: UUID,
        percent: int,
        message: str,
        origin: Origin,
        *,
        attempt: int | None = None,
    ) -> Committed:
        return self._change(
            job_id, lambda job: job.report_progress(percent, message, origin, attempt=attempt)
        )

    def complete_job(
        self, job_id: UUID, result: dict[str, Any], origin: Origin, *, attempt: int | None = None
    ) -> Committed:
        return self._change(job_id, lambda job: job.succeed(result, origin, attempt=attempt))

    def fail_attempt(
        self,
        job_id: UUID,
        error: str,
        *,
        retryable: bool,
        retry_delay_s: float | None,
        origin: Origin,
        attempt: int | None = None,
        traceback: str = "",
    ) -> Committed:
        """Record a failed attempt; with a delay and attempts left, schedule the next."""

        def fail(job: Job) -> None:
            retry_at = None
            if retryable and retry_delay_s is not None:
                retry_at = datetime.now(UTC) + timedelta(seconds=retry_delay_s)
            job.fail_attempt(
                error,
                retry_at=retry_at,
                retryable=retryable,
                origin=origin,
                attempt=attempt,
                traceback=traceback,
            )

        return self._change(job_id, fail)

    def interrupt_attempt(
        self, job_id: UUID, reason: str, *, attempt: int, origin: Origin
    ) -> Committed:
        """Give a running attempt back unfinished (a worker shutting down): it runs again
        at once and does not count against the job's attempts."""
        retry_at = datetime.now(UTC)
        return self._change(
            job_id,
            lambda job: job.interrupt(reason, retry_at=retry_at, origin=origin, attempt=attempt),
        )

    def hand_over_job(
        self, job_id: UUID, range_s: float, origin: Origin, now: datetime | None = None
    ) -> Committed | None:
        """Hand a job held in the ledger to the delay queues, if it is due for it
        (``Job.hand_over``); None when the ledger says there is nothing to do."""
        for _ in range(CONFLICT_RETRIES):
            job = self.get_job(job_id)
            if not job.hand_over(range_s, origin, now):
                return None
            try:
                return self._commit(job)
            except IntegrityError:
                self._forget(job_id)
            except Exception:
                self._forget(job_id)  # the outcome is unknown: read the store next time
                raise
        return None  # written meanwhile, again and again: the next pass decides again

    def cancel_job(self, job_id: UUID, origin: Origin) -> Committed:
        return self._change(job_id, lambda job: job.cancel(origin))

    def confirm_cancelled(
        self, job_id: UUID, origin: Origin, *, attempt: int | None = None
    ) -> Committed:
        return self._change(job_id, lambda job: job.confirm_cancelled(origin, attempt=attempt))

    def retry_job(self, job_id: UUID, origin: Origin) -> Committed:
        return self._change(job_id, lambda job: job.retry(origin))

    def get_job(self, job_id: UUID) -> Job:
        if self.reader is not None:
            self._read_into_cache(job_id)
        try:
            job: object = self.repository.get(job_id)
        except AggregateNotFoundError:
            raise JobNotFound from None
        if not isinstance(job, Job):
            raise JobNotFound  # a schedule's id (schedules share the ledger)
        return job

    def job_history(self, job_id: UUID) -> Sequence[Job.Event | Job.Submitted]:
        """Every event of the job, oldest first."""
        history = list(self.events.get(job_id))
        if not history or not isinstance(history[0], Job.Submitted):
            raise JobNotFound
        return history  # type: ignore[return-value]

    def job_as_of(self, job_id: UUID, at: datetime) -> Job:
        """The job as its events up to ``at`` left it, folded from the ledger as the
        aggregate folds them. JobNotFound if it had no event by then."""
        history = self.job_history_until(job_id, at)
        if not history:
            raise JobNotFound(f"job {job_id} did not exist yet at {at.isoformat()}")
        job: Any = None
        for event in history:
            job = event.mutate(job)
        assert isinstance(job, Job)
        return job

    def job_history_until(self, job_id: UUID, at: datetime) -> Sequence[Job.Event | Job.Submitted]:
        """The job's events up to ``at`` (by the time each was recorded), oldest first;
        JobNotFound if the job has none at all."""
        return [e for e in self.job_history(job_id) if e.timestamp <= at]

    def read_job(self, job_id: UUID) -> Job:
        """The job as the store has it now, never an older cached copy."""
        self._forget(job_id)
        return self.get_job(job_id)

    def _change(
        self, job_id: UUID, command: Callable[[Job], None], loaded: Job | None = None
    ) -> Committed:
        """Load, decide and save; on a concurrent write, reload and decide again."""
        for _ in range(CONFLICT_RETRIES):
            job = self._decided(job_id, command, loaded)
            loaded = None
            try:
                return self._commit(job)
            except IntegrityError:
                self._forget(job_id)
            except Exception:
                # The outcome is unknown (a lost reply may hide a commit): the next
                # read of this job goes to the store.
                self._forget(job_id)
                raise
        return self._commit(self._decided(job_id, command))

    def _decided(
        self, job_id: UUID, command: Callable[[Job], None], loaded: Job | None = None
    ) -> Job:
        """The job after ``command``. Without fast-forward a cached copy may be behind
        the store: a refusal is only believed once the store's copy refuses too."""
        job = loaded if loaded is not None else self.get_job(job_id)
        try:
            command(job)
        except InvalidTransition:
            if self.repository.fastforward or self.repository.cache is None:
                raise
            job = self.read_job(job_id)
            command(job)
        return job

    def _commit(self, job: Job) -> Committed:
        if self.writer is None:
            recordings = self.save(job)
            return Committed(job, recordings[-1].notification.id if recordings else 0)
        position = self.writer.save(job)
        self._cached(job)
        return Committed(job, position)

    def _cached(self, job: Job) -> None:
        """Without fast-forward, the copy just written is the one to use next."""
        cache = self.repository.cache
        if cache is not None and not self.repository.fastforward:
            cache.put(job.id, job)

    def _read_into_cache(self, job_id: UUID) -> None:
        cache = self.repository.cache
        assert cache is not None and self.reader is not None
        try:
            cache.get(job_id)
        except KeyError:
            job: Any = None
            for event in self.reader.events(job_id):
                job = event.mutate(job)
            if job is None:
                return
            with contextlib.suppress(KeyError):
                if cache.get(job_id).version >= job.version:
                    return  # this process's own write of it landed meanwhile
            cache.put(job_id, job)

    def _forget(self, job_id: UUID) -> None:
        """Drop a cached copy that lost a race, so the next read goes to the store."""
        cache = self.repository.cache
        if cache is not None:
            with contextlib.suppress(KeyError):
                cache.get(job_id, evict=True)
