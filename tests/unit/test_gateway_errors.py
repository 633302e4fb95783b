"""The correlation id is on every answer, a 500 from an unhandled error included."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from gateway.app import carry_correlation_ids


async def test_a_500_from_an_unhandled_error_carries_the_correlation_id() -> None:
    app = FastAPI()
    carry_correlation_ids(app, "X-Correlation-ID")

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("unhandled: secret detail")

    @app.get("/fine")
    def fine() -> dict[str, str]:
        return {}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        failed = await client.get("/boom", headers={"X-Correlation-ID": "req-500"})
        answered = await client.get("/fine", headers={"X-Correlation-ID": "req-200"})
        fresh = await client.get("/boom", headers={"X-Correlation-ID": "bad id"})

    assert (failed.status_code, failed.headers["x-correlation-id"]) == (500, "req-500")
    assert (answered.status_code, answered.headers["x-correlation-id"]) == (200, "req-200")
    assert fresh.headers["x-correlation-id"] not in ("", "bad id")
    assert "secret detail" not in failed.text
