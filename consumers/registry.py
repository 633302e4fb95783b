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
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from domain.errors import InvalidParams, UnknownJobType

Handler = Callable[..., Awaitable[Any]] | Callable[..., Any]

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Names that would collide with the gateway's job routes.
RESERVED = frozenset({"cancel", "retry", "events", "jobs", "progress"})


@dataclass(frozen=True)
class JobType:
    name: str
    handler: Handler
    params_model: type[BaseModel]
    pool: str
    max_attempts: int | None
    is_async: bool

    def validate(self, params: dict[str, Any]) -> BaseModel:
        try:
            return self.params_model.model_validate(params)
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
        self, name: str | None = None, *, pool: str = "default", max_attempts: int | None = None
    ) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of job type ``name``."""

        def register(handler: Handler) -> Handler:
            self.add(handler, name=name or handler.__name__, pool=pool, max_attempts=max_attempts)
            return handler

        return register

    def add(
        self, handler: Handler, *, name: str, pool: str = "default", max_attempts: int | None = None
    ) -> JobType:
        if not NAME.fullmatch(name) or name in RESERVED:
            msg = f"job type name {name!r} must match {NAME.pattern}, not one of {sorted(RESERVED)}"
            raise ValueError(msg)
        if name in self._types:
            msg = f"job type {name!r} is already registered"
            raise ValueError(msg)
        job_type = JobType(
            name=name,
            handler=handler,
            params_model=_params_model(handler),
            pool=pool,
            max_attempts=max_attempts,
            is_async=inspect.iscoroutinefunction(handler),
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

    def validate(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """The params as the handler will see them, in JSON form; raises
        UnknownJobType or InvalidParams."""
        return self.get(name).validate(params).model_dump(mode="json")


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
