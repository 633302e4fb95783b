"""What the gateway is given: the ledger, the view, the job types and how to
identify a caller. Built by infra/bootstrap.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from domain.ledger import JobLedger
from gateway.caller import Identify
from projections.projection import JobView


class JobTypeInfo(Protocol):
    @property
    def pool(self) -> str: ...

    @property
    def max_attempts(self) -> int | None: ...

    @property
    def params_model(self) -> type[BaseModel]: ...


class JobTypes(Protocol):
    """The registered job types, as the gateway needs them."""

    def names(self) -> list[str]: ...

    def get(self, name: str) -> JobTypeInfo: ...

    def validate(self, name: str, params: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Services:
    ledger: JobLedger
    view: JobView
    job_types: JobTypes
    identify: Identify
    default_max_attempts: int = 1
    read_your_writes_timeout_s: float = 2.0
