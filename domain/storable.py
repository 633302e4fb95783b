"""Text and JSON every reader of the ledger can store.

PostgreSQL refuses NUL in text and in jsonb, and jsonb refuses NaN and the infinities;
a lone UTF-16 surrogate cannot be encoded as UTF-8 at all. What a handler says (an
error, a result, a progress message) is made storable before it is recorded, so one
bad byte can never stop a projection: NUL and lone surrogates become U+FFFD, and
non-finite numbers null. (What a client sends is refused instead, with a 422.)"""

from __future__ import annotations

import math
import re
from typing import Any

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def text(value: str) -> str:
    return UNSTORABLE.sub(REPLACEMENT, value) if UNSTORABLE.search(value) else value


def json_value(value: Any) -> Any:
    """``value`` (JSON: dicts, lists, strings, numbers, booleans, null) made storable."""
    match value:
        case str():
            return text(value)
        case bool() | None:
            return value
        case float() if not math.isfinite(value):
            return None
        case dict():
            return {text(str(k)): json_value(v) for k, v in value.items()}
        case list() | tuple():
            return [json_value(v) for v in value]
    return value


def unstorable_at(value: Any, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where in ``value`` the first text or number no reader could store is, if any."""
    match value:
        case str():
            return path if UNSTORABLE.search(value) else None
        case float() if not math.isfinite(value):
            return path
        case dict():
            for key, item in value.items():
                if isinstance(key, str) and UNSTORABLE.search(key):
                    return (*path, key)
                found = unstorable_at(item, (*path, key))
                if found is not None:
                    return found
        case list() | tuple():
            for n, item in enumerate(value):
                found = unstorable_at(item, (*path, n))
                if found is not None:
                    return found
    return None
