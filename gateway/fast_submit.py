"""``POST /jobs`` answered without FastAPI's work per request, when the submit is
well formed.

A submit is the gateway's most frequent request. Under 32 clients, FastAPI's
machinery around it took about two fifths of the gateway's CPU: two exit stacks,
the dependencies solved one by one, the body validated as a field, the returned
model validated again before it is written. This route goes before the FastAPI
route of the same path and method. It does what that route does, in the same
order and with the same parts:
- the caller and its scope first (the route's own guard), before a byte of the
  body is read;
- the body read through the same limits and parsed by the same strict JSON reader;
- the same ``SubmitJob`` model;
- the same ``submit`` coroutine, with its span, log line and counter;
- the answer serialised as the FastAPI route would, with the same headers.

Whatever is not that goes on to the FastAPI route, with the body it sent, and is
answered there as any request is: no valid token (401), a missing scope (403), a
query string, a body that is not JSON of a valid submit (422), too large or too slow
(413, 408), an ``Idempotency-Key`` that is not one header of at most 128 characters.
Nothing is decided here that the FastAPI route would decide otherwise. The two give
the same bytes (tests/integration/test_fast_submit.py). What the submit itself
refuses (a quota, a conflicting key, an unknown type, a ledger that is down) is
raised, as from the FastAPI route, to the app's exception handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from gateway.caller import Caller
from gateway.guarded import Guard, is_json, strict_json
from gateway.schemas import IDEMPOTENCY_KEY_MAX, JobOut, SubmitJob

# The FastAPI route's own submit: (request, response, caller, body, idempotency key)
SubmitBody = Callable[[Request, Response, Caller, SubmitJob, str | None], Awaitable[JobOut]]
_JOB_OUT = TypeAdapter(JobOut)


def fast_submit_route(full: APIRoute, submit: SubmitBody, guard: Guard) -> Route:
    """A route for ``POST full.path`` that answers well-formed submits itself and
    hands everything else to ``full``. Put it before ``full``."""
    return Route(
        full.path,
        endpoint=FastSubmit(full, submit, guard),
        methods=["POST"],
        include_in_schema=False,
    )


class FastSubmit:
    def __init__(self, full: APIRoute, submit: SubmitBody, guard: Guard) -> None:
        self.full = full
        self.submit = submit
        self.guard = guard
        self.status_code = full.status_code or 200

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Handed on with what was read of the body (nothing, before the guard passes).
        seen = _Recording(receive)
        if scope["query_string"]:
            await self._hand_on(scope, seen.replay, send)
            return
        request = Request(scope, seen.receive)
        try:
            who: Caller = self.guard(request)
        except (HTTPException, RequestValidationError):
            await self._hand_on(scope, seen.replay, send)
            return
        keys = request.headers.getlist("idempotency-key")
        if len(keys) > 1 or (keys and len(keys[0]) > IDEMPOTENCY_KEY_MAX) or not is_json(request):
            await self._hand_on(scope, seen.replay, send)
            return
        try:
            job = SubmitJob.model_validate(strict_json(await request.body()))
        except (HTTPException, ClientDisconnect, RequestValidationError, ValidationError):
            # Sent again as it came (a read's error raised again): the FastAPI route
            # answers it, with the reason, as it always has.
            await self._hand_on(scope, seen.replay, send)
            return
        headers = Response()  # what ``submit`` sets, as FastAPI's ``response`` parameter
        del headers.headers["content-length"]
        out = await self.submit(request, headers, who, job, keys[0] if keys else None)
        response = Response(
            _JOB_OUT.dump_json(out, by_alias=True),
            status_code=self.status_code,
            media_type="application/json",
        )
        response.raw_headers.extend(headers.raw_headers)
        await response(scope, receive, send)

    async def _hand_on(self, scope: Scope, receive: Receive, send: Send) -> None:
        _, child = self.full.matches(scope)
        scope.update(child)
        await self.full.handle(scope, receive, send)


class _Recording:
    """A ``receive`` that remembers what it gave, and what it raised, to give it all
    again, in order, to the route the request is handed on to."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._messages: list[Message] = []
        self._error: Exception | None = None

    async def receive(self) -> Message:
        try:
            message = await self._receive()
        except Exception as exc:
            self._error = exc
            raise
        self._messages.append(message)
        return message

    async def replay(self) -> Message:
        if self._messages:
            return self._messages.pop(0)
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return await self._receive()
