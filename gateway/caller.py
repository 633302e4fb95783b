"""Who is calling, and the trace of the request: the origin of what it causes."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from domain.origin import Origin
from gateway.tracing import current_traceparent

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


READ = "jobs:read"
WRITE = "jobs:write"
ADMIN = "jobs:admin"
AUDIT = "jobs:audit"  # every event of the tenant, params included
SCOPES = (READ, WRITE, ADMIN, AUDIT)


@dataclass(frozen=True)
class Caller:
    subject: str
    tenant: str
    scopes: frozenset[str] = frozenset(SCOPES)


Identify = Callable[[Request], Caller]


def origin_of(request: Request, caller: Caller) -> Origin:
    """The cause of what the request appends: the caller, the request's correlation id
    and the current span (the append's, when traced; else the caller's traceparent)."""
    traceparent = request.headers.get("traceparent", "").strip().lower()
    return Origin(
        actor=caller.subject,
        correlation_id=request.state.correlation_id,
        traceparent=current_traceparent(traceparent if TRACEPARENT.match(traceparent) else ""),
    )
