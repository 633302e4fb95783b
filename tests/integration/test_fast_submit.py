"""``POST /jobs`` answered by the fast route (gateway/fast_submit.py) and by the
FastAPI route alone: the same status, headers and body for every kind of request,
good or bad; and the fast route hands on to the FastAPI route all but well-formed
submits.

Two gateways on one ledger, in this process: the gateway as built, and the same
gateway with its fast route taken out."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from gateway.caller import READ, SCOPES
from gateway.fast_submit import FastSubmit
from gateway.tokens import mint
from infra import ledger_store
from infra.gateway_process import build_gateway
from infra.settings import DEV_AUTH_SECRET, AuthSettings, PostgresSettings, Settings

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
WHEN = ("submitted_at", "run_at")


def _token(*scopes: str, tenant: str = "clinic-a") -> str:
    return mint(DEV_AUTH_SECRET, tenant=tenant, subject="app", scopes=scopes)


SOON = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
WRITER = {"Authorization": f"Bearer {_token(*SCOPES)}", "X-Correlation-ID": "req-fast-1"}
ECHO = {"type": "echo", "case_id": "case-1", "params": {"text": "hi"}}


class Gateways:
    def __init__(self, fast: httpx.AsyncClient, full: httpx.AsyncClient, handed_on: list[int]):
        self.fast = fast
        self.full = full
        self.handed_on = handed_on

    async def both(
        self, url: str = "/jobs", streamed: bytes | None = None, **request: Any
    ) -> tuple[httpx.Response, httpx.Response, bool]:
        """The request sent to each gateway; whether the fast route handed it on."""
        before = self.handed_on[0]
        fast = await self.fast.post(url, **request, **_stream(streamed))
        handed_on = self.handed_on[0] > before
        full = await self.full.post(url, **request, **_stream(streamed))
        return fast, full, handed_on


def _stream(body: bytes | None) -> dict[str, Any]:
    """A body sent in chunks, without a Content-Length."""
    if body is None:
        return {}

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    return {"content": chunks()}


@pytest.fixture
def handed_on(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    count = [0]
    hand_on = FastSubmit._hand_on

    async def counted(self: FastSubmit, *args: Any) -> None:
        count[0] += 1
        await hand_on(self, *args)

    monkeypatch.setattr(FastSubmit, "_hand_on", counted)
    return count


@pytest.fixture
async def gateways(pg: PostgresSettings, handed_on: list[int]) -> AsyncIterator[Gateways]:
    settings = Settings(
        app="tests.integration.app",
        postgres=pg,
        auth=AuthSettings(environment="development"),
    )
    ledger = ledger_store.open_ledger(pg)
    with_fast_route = build_gateway(settings, ledger)
    without = build_gateway(settings, ledger)
    without.router.routes[:] = [
        r for r in without.router.routes if not isinstance(getattr(r, "endpoint", None), FastSubmit)
    ]
    assert len(without.router.routes) == len(with_fast_route.router.routes) - 1

    def client(app: Any) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://gateway")

    async with client(with_fast_route) as fast, client(without) as full:
        yield Gateways(fast, full, handed_on)


def _same(fast: httpx.Response, full: httpx.Response, *, new_jobs: bool = False) -> None:
    """Equal, but for what differs between two new jobs (ids, times, positions)."""
    assert fast.status_code == full.status_code, (fast.text, full.text)
    assert _headers(fast, new_jobs) == _headers(full, new_jobs)
    if new_jobs:
        assert _job(fast.json()) == _job(full.json())
    else:
        assert fast.content == full.content


def _headers(response: httpx.Response, new_job: bool) -> dict[str, str]:
    headers = dict(response.headers)
    if new_job:
        headers["location"] = UUID.sub("<id>", headers["location"])
        headers["x-ledger-position"] = str(int(headers["x-ledger-position"]) > 0)
        headers["content-length"] = "<varies with the times' digits>"
    return headers


def _job(body: dict[str, Any]) -> dict[str, Any]:
    assert UUID.fullmatch(body.pop("id"))
    for name in WHEN:
        if body[name] is not None:
            body[name] = "<time>"
    return body


async def test_new_jobs_are_answered_alike_and_not_handed_on(
    gateways: Gateways, handed_on: list[int]
) -> None:
    for body in (
        ECHO,
        {**ECHO, "priority": "high", "delay_s": 30},
        {**ECHO, "run_at": SOON},
    ):
        fast, full, handed = await gateways.both(json=body, headers=WRITER)
        assert fast.status_code == 202, fast.text
        assert not handed, body
        _same(fast, full, new_jobs=True)
    assert handed_on[0] == 0


async def test_an_idempotency_key_names_the_same_job_on_either_route(gateways: Gateways) -> None:
    keyed = {**WRITER, "Idempotency-Key": "order-7"}
    first, again, handed = await gateways.both(json=ECHO, headers=keyed)
    assert not handed
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["id"] == again.json()["id"]
    assert "x-ledger-position" in first.headers  # written now
    fast_again, full_again, handed = await gateways.both(json=ECHO, headers=keyed)
    assert not handed
    assert "x-ledger-position" not in fast_again.headers  # written before
    _same(fast_again, full_again)
    conflict, full_conflict, handed = await gateways.both(
        json={**ECHO, "case_id": "case-2"}, headers=keyed
    )
    assert not handed  # refused by the submit itself, through the app's handlers
    assert conflict.status_code == 409
    _same(conflict, full_conflict)


TOO_LARGE = json.dumps({**ECHO, "params": {"text": "y" * 70000}}).encode()
BAD = [
    ("no token", {"json": ECHO, "headers": {"X-Correlation-ID": "r-1"}}, 401, True),
    (
        "a forged token",
        {"json": ECHO, "headers": {"Authorization": "Bearer abc.def.ghi", "X-Correlation-ID": "r"}},
        401,
        True,
    ),
    (
        "no write scope",
        {
            "json": ECHO,
            "headers": {"Authorization": f"Bearer {_token(READ)}", "X-Correlation-ID": "r"},
        },
        403,
        True,
    ),
    ("a query string", {"url": "/jobs?limt=5", "json": ECHO, "headers": WRITER}, 422, True),
    ("no body", {"headers": WRITER}, 422, True),
    (
        "broken JSON",
        {
            "content": b'{"type": "echo", ',
            "headers": {**WRITER, "Content-Type": "application/json"},
        },
        422,
        True,
    ),
    (
        "NaN",
        {
            "content": b'{"type": "echo", "case_id": "c", "params": {"x": NaN}}',
            "headers": {**WRITER, "Content-Type": "application/json"},
        },
        422,
        True,
    ),
    (
        "not JSON",
        {"content": json.dumps(ECHO).encode(), "headers": {**WRITER, "Content-Type": "text/plain"}},
        422,
        True,
    ),
    ("an unknown field", {"json": {**ECHO, "owner": "x"}, "headers": WRITER}, 422, True),
    ("a bad case id", {"json": {**ECHO, "case_id": "../etc"}, "headers": WRITER}, 422, True),
    (
        "run_at and delay_s",
        {"json": {**ECHO, "delay_s": 1, "run_at": SOON}, "headers": WRITER},
        422,
        True,
    ),
    (
        "a key too long",
        {"json": ECHO, "headers": {**WRITER, "Idempotency-Key": "k" * 129}},
        422,
        True,
    ),
    (
        "a streamed body too large",
        {"streamed": TOO_LARGE, "headers": {**WRITER, "Content-Type": "application/json"}},
        413,
        True,
    ),
    (
        "beyond the horizon",
        {"json": {**ECHO, "run_at": "2099-01-02T03:04:05Z"}, "headers": WRITER},
        422,
        False,
    ),
    ("an unknown type", {"json": {**ECHO, "type": "nope"}, "headers": WRITER}, 422, False),
    (
        "invalid params",
        {"json": {**ECHO, "params": {"text": "x" * 201}}, "headers": WRITER},
        422,
        False,
    ),
]


@pytest.mark.parametrize(
    ("request_", "status", "hands_on"),
    [pytest.param(r, s, h, id=name) for name, r, s, h in BAD],
)
async def test_a_bad_submit_gets_the_same_answer_from_either_route(
    gateways: Gateways, request_: dict[str, Any], status: int, hands_on: bool
) -> None:
    fast, full, handed = await gateways.both(**request_)
    assert fast.status_code == status, fast.text
    assert handed == hands_on
    _same(fast, full)
