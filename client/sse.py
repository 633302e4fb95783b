"""Server-Sent Events, parsed a line at a time (without its line ending)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SseEvent:
    id: int | None
    event: str
    data: Any


@dataclass
class SseParser:
    """Feed it the lines of a ``text/event-stream``; an event comes out at the blank
    line that ends it. Comments (the ``: keep-alive``) produce nothing."""

    _fields: dict[str, str] = field(default_factory=dict)
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> SseEvent | None:
        if line == "":
            if not self._data:
                self._fields.clear()
                return None
            event = SseEvent(
                id=int(self._fields["id"]) if self._fields.get("id", "").isdigit() else None,
                event=self._fields.get("event", "message"),
                data=json.loads("\n".join(self._data)),
            )
            self._fields, self._data = {}, []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        else:
            self._fields[name] = value
        return None
