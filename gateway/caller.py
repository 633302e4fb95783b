"""Who is calling, and the trace of the request: the origin of what it causes."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from domain.origin import Origin

CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


READ = "jobs:read"
WRITE = "jobs:write"
ADMIN = "jobs:admin"
SCOPES = (READ, WRITE, ADMIN)


@dataclass(frozen=True)
class Caller:
    subject: str
    tenant: str
    scopes: frozenset[str] = frozenset(SCOPES)


Identify = Callable[[Request], Caller]


def correlation_id_of(request: Request, header: str) -> str:
    """The request's correlation id when well formed, a new one otherwise."""
    given = request.headers.get(header, "")
    return given if CORRELATION_ID.match(given) else uuid.uuid4().hex


def origin_of(request: Request, caller: Caller) -> Origin:
    traceparent = request.headers.get("traceparent", "").strip().lower()
    return Origin(
        actor=caller.subject,
        correlation_id=request.state.correlation_id,
        traceparent=traceparent if TRACEPARENT.match(traceparent) else "",
    )
