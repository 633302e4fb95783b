"""A job's priority: which of its pool's lanes its first delivery waits in."""

from __future__ import annotations

from enum import StrEnum

from domain.errors import InvalidPriority


class Priority(StrEnum):
    """How soon a waiting job is taken: a worker starts a waiting ``high`` job before
    any ``normal`` one, and a ``normal`` one before any ``low`` one (with a bound on
    how long a lower one can be passed over)."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @classmethod
    def of(cls, value: str) -> Priority:
        try:
            return cls(value)
        except ValueError:
            raise InvalidPriority(value) from None
