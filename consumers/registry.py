"""Job types are registered in user code: one typed function each.

    registry = JobRegistry()

    class SegmentParams(BaseModel):
        scan_id: str

    @registry.job("segment")
    async def segment(ctx: JobContext, params: SegmentParams) -> dict:
        ctx.progress(50, "halfway")
        return {"mask": "..."}

The params model is read from the handler's signature, so the gateway can reject
bad params at submit time and the worker validates them again before running.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from consumers.routing import check_pool_name
from domain.errors import InvalidParams, UnknownJobType
from domain.priority import Priority
from domain.retry import RetryPolicy

Handler = Callable[..., Awaitable[Any]] | Callable[..., Any]

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Names that would collide with the gateway's job routes.
RESERVED = frozenset({"cancel", "retry", "events", "jobs", "progress"})


RunIn = Literal["loop", "thread", "process"]


@dataclass(frozen=True)
class Limits:
    """How long, how big and how often a job type may run. ``time_limit_s`` is soft:
    the handler is cancelled (an async task is cancelled, a thread sees
    ``ctx.cancelled``, a process gets SIGTERM). ``hard_time_limit_s`` and
    ``memory_limit_mb`` apply to process-run handlers: the process is killed, or
    its address space capped at what it is when the handler starts plus
    ``memory_limit_mb``. ``per_second`` and ``max_running`` hold across every
    worker of the pool; a limited job waits without spending an attempt."""

    time_limit_s: float | None = None
    hard_time_limit_s: float | None = None
    memory_limit_mb: int | None = None
    per_second: float | None = None
    max_running: int | None = None


@dataclass(frozen=True)
class JobType:
    """A registered job type. ``validate`` takes params as the ledger holds them;
    ``submission_model`` is what a client may submit: the params model with unknown
    fields refused."""

    name: str
    handler: Handler
    params_model: type[BaseModel]
    pool: str
    run_in: RunIn
    retry: RetryPolicy | None = None
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    limits: Limits = field(default_factory=Limits)
    # A cron expression: the scheduler submits a job of this type at each tick
    # (params {}; see README "Cron schedules").
    schedule: str | None = None
    schedule_zone: str = "UTC"
    priority: str = Priority.NORMAL.value  # the default of a submit that names none

    @property
    def is_async(self) -> bool:
        return self.run_in == "loop"

    @property
    def max_attempts(self) -> int | None:
        return self.retry.max_attempts if self.retry else None

    @cached_property
    def submission_model(self) -> type[BaseModel]:
        model = self.params_model
        config = ConfigDict(**{**model.model_config, "extra": "forbid"})
        namespace = {
            "model_config": config,
            "__module__": model.__module__,
            "__doc__": model.__doc__,
        }
        return type(model.__name__, (model,), namespace)

    def validate(self, params: dict[str, Any], *, strict: bool = False) -> BaseModel:
        model = self.submission_model if strict else self.params_model
        try:
            return model.model_validate(params)
        except ValidationError as exc:
            errors: list[dict[str, object]] = [
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
            raise InvalidParams(self.name, errors) from None


class JobRegistry:
    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}

    def job(
        self,
        name: str | None = None,
        *,
        pool: str = "default",
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        run_in: RunIn | None = None,
        limits: Limits | None = None,
        schedule: str | None = None,
        schedule_zone: str = "UTC",
        priority: str = "normal",
    ) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of job type ``name``.
        ``retry`` (or just ``max_attempts``) overrides the worker's default policy;
        only errors in ``retry_on`` are retried. ``run_in="process"`` runs a ``def``
        handler in its own process (killable, memory-capped). ``schedule`` (a cron
        expression, in ``schedule_zone``) submits one with empty params at each tick.
        ``priority`` (high, normal, low) is the default of a submit that names none."""

        def register(handler: Handler) -> Handler:
            policy = retry
            if max_attempts is not None:
                policy = replace(retry or RetryPolicy(), max_attempts=max_attempts)
            self.add(
                handler,
                name=name or handler.__name__,
                pool=pool,
                retry=policy,
                retry_on=retry_on,
                run_in=run_in,
                limits=limits or Limits(),
                schedule=schedule,
                schedule_zone=schedule_zone,
                priority=priority,
            )
            return handler

        return register

    def add(
        self,
        handler: Handler,
        *,
        name: str,
        pool: str = "default",
        retry: RetryPolicy | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        run_in: RunIn | None = None,
        limits: Limits | None = None,
        schedule: str | None = None,
        schedule_zone: str = "UTC",
        priority: str = "normal",
    ) -> JobType:
        if not NAME.fullmatch(name) or name in RESERVED:
            msg = f"job type name {name!r} must match {NAME.pattern}, not one of {sorted(RESERVED)}"
            raise ValueError(msg)
        check_pool_name(pool)
        if priority not in {p.value for p in Priority}:
            msg = f"{name}: priority {priority!r} is not one of high, normal, low"
            raise ValueError(msg)
        if name in self._types:
            msg = f"job type {name!r} is already registered"
            raise ValueError(msg)
        is_async = inspect.iscoroutinefunction(handler)
        if run_in is None:
            run_in = "loop" if is_async else "thread"
        if is_async != (run_in == "loop"):
            msg = f"{name}: async handlers run on the loop; def handlers in a thread or process"
            raise ValueError(msg)
        job_type = JobType(
            name=name,
            handler=handler,
            params_model=_params_model(handler),
            pool=pool,
            run_in=run_in,
            retry=retry,
            retry_on=retry_on,
            limits=limits or Limits(),
            schedule=schedule,
            schedule_zone=schedule_zone,
            priority=priority,
        )
        self._types[name] = job_type
        return job_type

    def get(self, name: str) -> JobType:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownJobType(name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._types)

    def scheduled(self) -> list[JobType]:
        """The job types declared with a ``schedule``."""
        return [t for _, t in sorted(self._types.items()) if t.schedule is not None]

    def validate(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """The params as a client may submit them (unknown fields refused), in the JSON
        form the handler will see; raises UnknownJobType or InvalidParams."""
        return self.get(name).validate(params, strict=True).model_dump(mode="json")


def _params_model(handler: Handler) -> type[BaseModel]:
    """The pydantic model annotated on the handler's second parameter."""
    hints = typing.get_type_hints(handler)
    parameters = list(inspect.signature(handler).parameters)
    model = hints.get(parameters[1]) if len(parameters) == 2 else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        name = getattr(handler, "__qualname__", repr(handler))
        msg = f"{name} must take (ctx, params: <a pydantic BaseModel>)"
        raise TypeError(msg)
    return model
