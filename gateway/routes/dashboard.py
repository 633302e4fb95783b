"""/dashboard: the operators' page (jobs, a job's history, queues and workers, the
DLQ), served as three static files. The page holds no data and needs no token to
load: it signs in by keeping a token in the tab's session storage and sends it as
``Authorization: Bearer`` with every request it makes, the live streams included
(read with ``fetch``, not EventSource, which cannot send headers), so no URL the
page builds carries a token.

Everything it needs comes from this origin; its Content-Security-Policy allows
nothing else, no inline script or style, and no framing."""

from __future__ import annotations

import html
from importlib import resources

from fastapi import APIRouter, HTTPException, Response

from gateway.guarded import GuardedRoute

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # A first visit may carry ?access_token=: it is never sent on as a referrer.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


def build_router(trace_url: str = "") -> APIRouter:
    """``trace_url``: the tracing UI's page of a trace, ``{trace_id}`` in it; the page
    reads it from a meta tag (no inline script)."""
    router = APIRouter(route_class=GuardedRoute, include_in_schema=False)
    files = resources.files("gateway") / "dashboard"
    meta = f'<meta name="jobledger-trace-url" content="{html.escape(trace_url)}">'
    page = (files / "index.html").read_bytes().replace(b"<!--trace-url-->", meta.encode())
    assets = {name: (files / name).read_bytes() for name in ASSETS}

    @router.get("/dashboard")
    async def dashboard() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=HEADERS)

    @router.get("/dashboard/{name}")
    async def asset(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, "no such file")
        return Response(assets[name], media_type=ASSETS[name], headers=HEADERS)

    return router
