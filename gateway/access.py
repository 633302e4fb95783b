"""Who may do what: the dependencies every route declares.

``Reading``, ``Writing`` and ``Operating`` identify the caller (through the
``identify`` the gateway was built with) and require the scope the route needs.
A caller without it gets 403; ``identify`` itself answers 401 for a caller it
cannot identify. Query parameters the route does not declare are then refused
(422), so every guarded route is strict about its query as about its body."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from gateway.caller import ADMIN, AUDIT, READ, WRITE, Caller
from gateway.guarded import GUARD_ATTRIBUTE
from gateway.schemas import ErrorOut
from gateway.services import Services
from gateway.strict import reject_unknown_query

# What every route guarded by these dependencies may also answer; routers declare
# it (``APIRouter(responses=DENIED)``) so the OpenAPI document tells the truth.
DENIED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No valid bearer token (see WWW-Authenticate)."},
    403: {"model": ErrorOut, "description": "The token lacks the scope this needs."},
    413: {"model": ErrorOut, "description": "The request body is too large."},
    431: {"model": ErrorOut, "description": "The request headers are too large."},
    400: {
        "description": "Malformed HTTP (refused by the HTTP server itself).",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
}


def _require(scope: str) -> Callable[[Request], Coroutine[Any, Any, Caller]]:
    def caller(request: Request) -> Caller:
        cached: Caller | None = getattr(request.state, "caller", None)
        if cached is not None and scope in cached.scopes:
            return cached  # the route's guard ran it before reading the body
        services: Services = request.app.state.services
        who = services.identify(request)
        if scope not in who.scopes:
            raise HTTPException(
                status_code=403,
                detail=f"this needs the {scope} scope",
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
            )
        reject_unknown_query(request)
        request.state.caller = who
        return who

    async def dependency(request: Request) -> Caller:
        """On the event loop: checking a token is CPU alone, and a sync dependency
        would cost every request a hop to a worker thread and back."""
        return caller(request)

    setattr(dependency, GUARD_ATTRIBUTE, caller)
    return dependency


Reading = Annotated[Caller, Depends(_require(READ))]
Writing = Annotated[Caller, Depends(_require(WRITE))]
Operating = Annotated[Caller, Depends(_require(ADMIN))]
Auditing = Annotated[Caller, Depends(_require(AUDIT))]
