"""Who and what caused an event: recorded on every event of a job."""

from __future__ import annotations

from dataclasses import dataclass

SYSTEM = "system"


@dataclass(frozen=True)
class Origin:
    """The cause of a command: the actor (a token subject, a worker id or ``system``),
    the correlation id the request carried, and the W3C trace context to continue."""

    actor: str = SYSTEM
    correlation_id: str = ""
    traceparent: str = ""
