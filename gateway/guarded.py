"""Every route of the gateway is a GuardedRoute: it identifies the caller and checks
the route's scope before it reads the request's body (a request without a valid token
gets 401, whatever its body), and it reads a JSON body strictly.

JSON that Python would take and the specification does not (NaN, Infinity, numbers
too large for a double) and text PostgreSQL cannot store (NUL) or UTF-8 cannot encode
(a lone surrogate) is refused with a 422 naming where it is. Nothing of the body goes
into the answer's ``input`` or into a log line."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from domain import storable
from gateway.caller import Caller

Guard = Callable[[Request], Caller]
GUARD_ATTRIBUTE = "__jobledger_guard__"


class GuardedRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        guard = guard_of(self.dependant)

        async def guarded(request: Request) -> Response:
            if guard is not None:
                try:
                    guard(request)  # 401 / 403 before a byte of the body is read
                except HTTPException as exc:
                    if _has_body(request):  # unread: the connection cannot be reused
                        exc.headers = {**(exc.headers or {}), "Connection": "close"}
                    raise
            if self.body_field is not None and is_json(request):
                body = await request.body()
                if body:
                    request._json = strict_json(body)
            return await handler(request)

        return guarded


def strict_json(body: bytes) -> Any:
    """The JSON document in ``body``; a RequestValidationError naming what is wrong and
    where. Python's parser takes NaN, Infinity and 1e400 (as non-finite floats), so
    they are found afterwards, with their place, like NUL and lone surrogates."""
    try:
        document = json.loads(body)
    except json.JSONDecodeError as exc:
        raise invalid(("body", exc.pos), f"JSON decode error: {exc.msg}", "json_invalid") from None
    except (ValueError, RecursionError) as exc:  # not UTF-8, or nested too deep
        raise invalid(
            ("body",), f"JSON decode error: {type(exc).__name__}", "json_invalid"
        ) from None
    where = storable.unstorable_at(document)
    if where is not None:
        raise invalid(
            ("body", *where),
            "not storable: NUL, a lone surrogate, NaN, an infinity or a number beyond a double",
        )
    return document


def invalid(loc: tuple[Any, ...], msg: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 shaped as FastAPI's own (the one the document declares): one error, its
    field named by ``loc``."""
    return RequestValidationError([{"type": kind, "loc": loc, "msg": msg}])


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length", "0")
    return length != "0" or "chunked" in request.headers.get("transfer-encoding", "").lower()


def is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    base = content_type.split(";", 1)[0].strip().lower()
    return base == "application/json" or base.endswith("+json") or not base


def guard_of(dependant: Dependant) -> Guard | None:
    """The guard (access.py's scope check) among the route's dependencies, if any."""
    for sub in dependant.dependencies:
        guard: Guard | None = getattr(sub.call, GUARD_ATTRIBUTE, None)
        if guard is not None:
            return guard
        found = guard_of(sub)
        if found is not None:
            return found
    return None
