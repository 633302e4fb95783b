"""A small status page for one job, fed by the browser's own EventSource.

EventSource cannot send headers, so the page passes on the ``access_token`` of its
own URL's query to the stream's URL."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from domain.errors import JobNotFound
from gateway.access import Reading
from gateway.guarded import GuardedRoute
from gateway.services import Services

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>job __JOB_ID__</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; max-width: 48em; }
  progress { width: 100%; height: 1.5em; }
  #events { font-family: ui-monospace, monospace; font-size: 12px; }
  .error { color: #b00020; }
  #traceback { font-size: 12px; background: #f6f6f6; padding: .5em; overflow-x: auto; }
  #traceback:empty { display: none; }
</style>
</head>
<body data-state="connecting">
<h1>job <code>__JOB_ID__</code></h1>
<p>status: <strong id="status">connecting</strong></p>
<progress id="bar" max="100" value="0"></progress>
<p><span id="percent">0</span>% <span id="message"></span></p>
<p id="error" class="error"></p>
<pre id="traceback"></pre>
<ol id="events"></ol>
<script>
(function () {
  "use strict";
  var job = "__JOB_ID__";
  var token = new URLSearchParams(window.location.search).get("access_token");
  var url = "../../jobs/" + job + "/progress";
  if (token) { url += "?access_token=" + encodeURIComponent(token); }
  document.body.dataset.stream = url;
  var terminal = { Succeeded: true, Failed: true, Cancelled: true };
  var source = new EventSource(url);
  function text(id, value) { document.getElementById(id).textContent = value; }
  function show(message) {
    var e = JSON.parse(message.data);
    var item = document.createElement("li");
    item.dataset.position = message.lastEventId;
    item.dataset.type = e.type;
    var detail = e.type === "ProgressReported" ? " " + e.data.percent + "% " + e.data.message : "";
    item.textContent = e.at.slice(11, 23) + " " + e.type + " (" + e.status + ")" + detail;
    document.getElementById("events").appendChild(item);
    text("status", e.status);
    document.body.dataset.state = e.status;
    if (e.type === "ProgressReported") {
      document.getElementById("bar").value = e.data.percent;
      text("percent", e.data.percent);
      text("message", e.data.message);
    }
    if (e.type === "Succeeded") {
      document.getElementById("bar").value = 100;
      text("percent", 100);
    }
    if (e.data.error) { text("error", e.data.error); }
    // Where the last failed attempt's handler raised (kept on AttemptFailed).
    if (e.type === "AttemptFailed") { text("traceback", e.data.traceback || ""); }
    if (e.type === "Started") { text("traceback", ""); text("error", ""); }
    // A history may hold an earlier end (failed, then retried): the job has ended
    // when the last event is terminal. The server then closes the stream, and the
    // EventSource's reconnect gets 204, which stops it.
    if (terminal[e.type]) { document.body.dataset.done = "yes"; }
    else { delete document.body.dataset.done; }
  }
  ["status", "progress", "error", "result"].forEach(function (kind) {
    source.addEventListener(kind, show);
  });
  source.onerror = function () {
    if (source.readyState === EventSource.CLOSED && !document.body.dataset.done) {
      text("status", "stream closed");
      document.body.dataset.done = "closed";
    }
  };
})();
</script>
</body>
</html>
"""


def build_router(services: Services) -> APIRouter:
    router = APIRouter(route_class=GuardedRoute)

    @router.get("/ui/jobs/{job_id}", include_in_schema=False, response_class=HTMLResponse)
    def status_page(job_id: UUID, who: Reading) -> HTMLResponse:
        if services.ledger.get_job(job_id).tenant != who.tenant:
            raise JobNotFound
        return HTMLResponse(PAGE.replace("__JOB_ID__", str(job_id)))

    return router
