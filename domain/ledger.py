"""The JobLedger application: one method per command, each one transaction.

A command that changes a job is written once, as its steps (``_changing``): load the
job, decide, save; on a concurrent write, reload and decide again. The steps name
what they need from the store and a driver does it: the command methods block on
each step (a caller in a thread), their ``_async`` twins await it (a worker's event
loop, handing reads and writes straight to the group read and the group commit
without a thread of its own in between)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
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

T = TypeVar("T")
Decide = Callable[[Job], None]  # a command's decision on a job: raises or records events


@dataclass(frozen=True)
class _Load:
    """The job: the cached copy if there is one, else the store's."""

    job_id: UUID


@dataclass(frozen=True)
class _Reload:
    """The job as the store has it, never a cached copy."""

    job_id: UUID


@dataclass(frozen=True)
class _Save:
    """Save the job's new events; the step's value is the Committed."""

    job: Job


# A command's steps: each yields what it needs and is sent what the store gave.
Steps = Generator[_Load | _Reload | _Save, Any, T]


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
        """Does ``append_submitted_async`` hand the write to the writer (group commit
        on), rather than to a thread of its own?"""
        return self.writer is not None

    async def append_submitted_async(self, job: Job) -> Committed:
        """``append_submitted``, awaited: written with others' by the writer (group
        commit on), else in a thread. A caller that gives up (is cancelled) is not
        answered; the job stands."""
        if self.writer is None:
            return await asyncio.to_thread(self.append_submitted, job)
        try:
            return await self._commit_async(job)
        except IntegrityError:
            raise DuplicateSubmission from None

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
        return self._change(job_id, _start(attempt, worker_id, origin, delivery_id), loaded)

    async def start_job_async(
        self,
        job_id: UUID,
        attempt: int,
        worker_id: str,
        origin: Origin,
        delivery_id: str = "",
        *,
        loaded: Job | None = None,
    ) -> Committed:
        return await self._change_async(
            job_id, _start(attempt, worker_id, origin, delivery_id), loaded
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
        return self._change(job_id, _report(percent, message, origin, attempt))

    async def report_progress_async(
        self,
        job_id: UUID,
        percent: int,
        message: str,
        origin: Origin,
        *,
        attempt: int | None = None,
    ) -> Committed:
        return await self._change_async(job_id, _report(percent, message, origin, attempt))

    def complete_job(
        self, job_id: UUID, result: dict[str, Any], origin: Origin, *, attempt: int | None = None
    ) -> Committed:
        return self._change(job_id, _succeed(result, origin, attempt))

    async def complete_job_async(
        self, job_id: UUID, result: dict[str, Any], origin: Origin, *, attempt: int | None = None
    ) -> Committed:
        return await self._change_async(job_id, _succeed(result, origin, attempt))

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
        return self._change(
            job_id, _fail(error, retryable, retry_delay_s, origin, attempt, traceback)
        )

    async def fail_attempt_async(
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
        return await self._change_async(
            job_id, _fail(error, retryable, retry_delay_s, origin, attempt, traceback)
        )

    def interrupt_attempt(
        self, job_id: UUID, reason: str, *, attempt: int, origin: Origin
    ) -> Committed:
        """Give a running attempt back unfinished (a worker shutting down): it runs again
        at once and does not count against the job's attempts."""
        return self._change(job_id, _interrupt(reason, attempt, origin))

    async def interrupt_attempt_async(
        self, job_id: UUID, reason: str, *, attempt: int, origin: Origin
    ) -> Committed:
        return await self._change_async(job_id, _interrupt(reason, attempt, origin))

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
        return self._change(job_id, _confirm_cancelled(origin, attempt))

    async def confirm_cancelled_async(
        self, job_id: UUID, origin: Origin, *, attempt: int | None = None
    ) -> Committed:
        return await self._change_async(job_id, _confirm_cancelled(origin, attempt))

    def retry_job(self, job_id: UUID, origin: Origin) -> Committed:
        return self._change(job_id, lambda job: job.retry(origin))

    async def retry_job_async(self, job_id: UUID, origin: Origin) -> Committed:
        return await self._change_async(job_id, lambda job: job.retry(origin))

    def get_job(self, job_id: UUID) -> Job:
        if self.reader is not None:
            self._read_into_cache(job_id)
        return self._repository_job(job_id)

    def _repository_job(self, job_id: UUID) -> Job:
        """The repository's copy: the cached one if there is one, else the store's."""
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

    async def get_job_async(self, job_id: UUID) -> Job:
        """``get_job``, awaiting the group read (a worker's ledger); in a thread without one."""
        if self.reader is None:
            return await asyncio.to_thread(self.get_job, job_id)
        if not self._in_cache(job_id):
            events = await self.reader.events_async(job_id)
            if not self._fold_into_cache(job_id, events):
                raise JobNotFound
        return self._repository_job(job_id)  # from the cache: no read

    async def read_job_async(self, job_id: UUID) -> Job:
        self._forget(job_id)
        return await self.get_job_async(job_id)

    def _change(self, job_id: UUID, decide: Decide, loaded: Job | None = None) -> Committed:
        return self._done(self._changing(job_id, decide, loaded))

    async def _change_async(
        self, job_id: UUID, decide: Decide, loaded: Job | None = None
    ) -> Committed:
        return await self._awaited(self._changing(job_id, decide, loaded))

    def _changing(self, job_id: UUID, decide: Decide, loaded: Job | None) -> Steps[Committed]:
        """Load, decide and save; on a concurrent write, reload and decide again."""
        for _ in range(CONFLICT_RETRIES):
            job = yield from self._deciding(job_id, decide, loaded)
            loaded = None
            try:
                committed: Committed = yield _Save(job)
            except IntegrityError:
                self._forget(job_id)
            except BaseException:
                # The outcome is unknown (a lost reply may hide a commit; a caller on
                # a loop may give up waiting): the next read of this job goes to the store.
                self._forget(job_id)
                raise
            else:
                return committed
        job = yield from self._deciding(job_id, decide, None)
        committed = yield _Save(job)
        return committed

    def _deciding(self, job_id: UUID, decide: Decide, loaded: Job | None) -> Steps[Job]:
        """The job after ``decide``. Without fast-forward a cached copy may be behind
        the store: a refusal is only believed once the store's copy refuses too."""
        job: Job = loaded if loaded is not None else (yield _Load(job_id))
        try:
            decide(job)
        except InvalidTransition:
            if self.repository.fastforward or self.repository.cache is None:
                raise
            job = yield _Reload(job_id)
            decide(job)
        return job

    def _done(self, steps: Steps[T]) -> T:
        """Run ``steps``, blocking on each; what a step raises is raised into them."""
        send: Callable[[Any], Any] = steps.send
        value: Any = None
        while True:
            try:
                step = send(value)
            except StopIteration as stopped:
                return stopped.value  # type: ignore[no-any-return]
            try:
                value, send = self._step(step), steps.send
            except BaseException as exc:  # noqa: BLE001 - the steps decide what it means
                value, send = exc, steps.throw

    async def _awaited(self, steps: Steps[T]) -> T:
        """``_done``, awaiting each step instead."""
        send: Callable[[Any], Any] = steps.send
        value: Any = None
        while True:
            try:
                step = send(value)
            except StopIteration as stopped:
                return stopped.value  # type: ignore[no-any-return]
            try:
                value, send = await self._step_async(step), steps.send
            except BaseException as exc:  # noqa: BLE001 - a cancel too: the job is forgotten
                value, send = exc, steps.throw

    def _step(self, step: _Load | _Reload | _Save) -> Any:
        match step:
            case _Load(job_id):
                return self.get_job(job_id)
            case _Reload(job_id):
                return self.read_job(job_id)
            case _Save(job):
                return self._commit(job)

    async def _step_async(self, step: _Load | _Reload | _Save) -> Any:
        match step:
            case _Load(job_id):
                return await self.get_job_async(job_id)
            case _Reload(job_id):
                return await self.read_job_async(job_id)
            case _Save(job):
                return await self._commit_async(job)

    def _commit(self, job: Job) -> Committed:
        if self.writer is None:
            recordings = self.save(job)
            return Committed(job, recordings[-1].notification.id if recordings else 0)
        position = self.writer.save(job)
        self._cached(job)
        return Committed(job, position)

    async def _commit_async(self, job: Job) -> Committed:
        if self.writer is None:
            return await asyncio.to_thread(self._commit, job)
        position = await self.writer.save_async(job)
        self._cached(job)
        return Committed(job, position)

    def _cached(self, job: Job) -> None:
        """Without fast-forward, the copy just written is the one to use next."""
        cache = self.repository.cache
        if cache is not None and not self.repository.fastforward:
            cache.put(job.id, job)

    def _read_into_cache(self, job_id: UUID) -> None:
        assert self.reader is not None
        if not self._in_cache(job_id):
            self._fold_into_cache(job_id, self.reader.events(job_id))

    def _in_cache(self, job_id: UUID) -> bool:
        cache = self.repository.cache
        assert cache is not None
        try:
            cache.get(job_id)
        except KeyError:
            return False
        return True

    def _fold_into_cache(self, job_id: UUID, events: Sequence[Any]) -> bool:
        """Cache the job ``events`` make, unless this process's own write of it landed
        meanwhile; False when there are none."""
        cache = self.repository.cache
        assert cache is not None
        job: Any = None
        for event in events:
            job = event.mutate(job)
        if job is None:
            return False
        with contextlib.suppress(KeyError):
            if cache.get(job_id).version >= job.version:
                return True
        cache.put(job_id, job)
        return True

    def _forget(self, job_id: UUID) -> None:
        """Drop a cached copy that lost a race, so the next read goes to the store."""
        cache = self.repository.cache
        if cache is not None:
            with contextlib.suppress(KeyError):
                cache.get(job_id, evict=True)


# What each command decides, shared by the blocking and the awaiting form.


def _start(attempt: int, worker_id: str, origin: Origin, delivery_id: str) -> Decide:
    return lambda job: job.start(attempt, worker_id, origin, delivery_id)


def _report(percent: int, message: str, origin: Origin, attempt: int | None) -> Decide:
    return lambda job: job.report_progress(percent, message, origin, attempt=attempt)


def _succeed(result: dict[str, Any], origin: Origin, attempt: int | None) -> Decide:
    return lambda job: job.succeed(result, origin, attempt=attempt)


def _fail(
    error: str,
    retryable: bool,
    retry_delay_s: float | None,
    origin: Origin,
    attempt: int | None,
    traceback: str,
) -> Decide:
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

    return fail


def _interrupt(reason: str, attempt: int, origin: Origin) -> Decide:
    retry_at = datetime.now(UTC)
    return lambda job: job.interrupt(reason, retry_at=retry_at, origin=origin, attempt=attempt)


def _confirm_cancelled(origin: Origin, attempt: int | None) -> Decide:
    return lambda job: job.confirm_cancelled(origin, attempt=attempt)
