/* jobledger's dashboard: jobs (live from GET /stream), a job's history, queues and
   workers, dead letters. Plain JS, no build step, nothing from another origin.

   The token is kept in sessionStorage and sent as "Authorization: Bearer" with every
   request, the live streams included: they are read with fetch (EventSource cannot
   send headers), so no URL this page builds carries the token. */
(function () {
  "use strict";

  var TOKEN_KEY = "jobledger.token";
  var TERMINAL = { succeeded: true, failed: true, cancelled: true };
  var STATUSES = ["scheduled", "queued", "running", "retry_scheduled", "succeeded", "failed", "cancelled"];
  var MAX_ROWS = 200;
  var body = document.body;
  var main = document.getElementById("main");
  var current = null; // the open view: { stop() }

  // ---- small helpers -------------------------------------------------------

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) { return; }
      if (key === "text") { node.textContent = value; }
      else if (key === "class") { node.className = value; }
      else if (key.slice(0, 2) === "on") { node.addEventListener(key.slice(2), value); }
      else if (key.slice(0, 5) === "data-") { node.setAttribute(key, value); }
      else if (value === true) { node.setAttribute(key, ""); }
      else { node.setAttribute(key, value); }
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) { return; }
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  function claims() {
    try {
      var part = token().split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(decodeURIComponent(escape(atob(part))));
    } catch (e) { return {}; }
  }

  function scopes() {
    var scope = claims().scope;
    return Array.isArray(scope) ? scope : String(scope || "").split(" ");
  }

  function can(scope) { return scopes().indexOf(scope) >= 0; }

  function headers(extra) {
    var h = { Authorization: "Bearer " + token(), Accept: "application/json" };
    Object.keys(extra || {}).forEach(function (k) { h[k] = extra[k]; });
    return h;
  }

  // Every path is relative to the page (/dashboard): "jobs" is /jobs.
  function api(path, options) {
    options = options || {};
    var init = { method: options.method || "GET", headers: headers(options.headers), cache: "no-store" };
    if (options.json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.json);
    }
    return fetch(path, init).then(function (response) {
      if (response.status === 401) {
        return response.json().catch(function () { return {}; }).then(function (b) {
          signOut("The token was refused: " + (b.detail || "401"));
          throw new Error("unauthorized");
        });
      }
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
        if (!response.ok) {
          var detail = data && data.detail ? data.detail : response.status + " " + response.statusText;
          var error = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
          error.status = response.status;
          throw error;
        }
        return { data: data, headers: response.headers };
      });
    });
  }

  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  // A Server-Sent Events stream read with fetch, resumed with Last-Event-ID after a
  // break. Resolves with "ended" (204: a finished job's stream), "too-old" (409) or
  // "stopped".
  function follow(path, lastId, onEvent, state) {
    var backoff = 250;
    function attempt() {
      if (state.stopped) { return Promise.resolve("stopped"); }
      var extra = { Accept: "text/event-stream" };
      if (lastId !== null && lastId !== undefined) { extra["Last-Event-ID"] = String(lastId); }
      state.controller = new AbortController();
      return fetch(path, { headers: headers(extra), signal: state.controller.signal, cache: "no-store" })
        .then(function (response) {
          if (response.status === 204) { return "ended"; }
          if (response.status === 409) { return "too-old"; }
          if (response.status === 401) { signOut("The token was refused while streaming."); return "stopped"; }
          if (!response.ok) { throw new Error("stream " + response.status); }
          if (state.onopen) { state.onopen(); }
          backoff = 250;
          var reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          var buffer = "";
          function pump() {
            return reader.read().then(function (chunk) {
              if (chunk.done) { return null; }
              buffer += chunk.value;
              var at;
              while ((at = buffer.indexOf("\n\n")) >= 0) {
                var block = buffer.slice(0, at);
                buffer = buffer.slice(at + 2);
                var id = null, kind = "message", data = [];
                block.split("\n").forEach(function (line) {
                  if (line.charAt(0) === ":") { return; }
                  var colon = line.indexOf(":");
                  var field = colon < 0 ? line : line.slice(0, colon);
                  var value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
                  if (field === "id") { id = value; }
                  else if (field === "event") { kind = value; }
                  else if (field === "data") { data.push(value); }
                });
                if (data.length) {
                  if (id !== null) { lastId = id; }
                  onEvent(JSON.parse(data.join("\n")), kind, id);
                }
              }
              return pump();
            });
          }
          return pump().then(function () { return attempt(); });
        })
        .catch(function () {
          if (state.stopped) { return "stopped"; }
          if (state.onbreak) { state.onbreak(); }
          backoff = Math.min(backoff * 2, 5000);
          return sleep(backoff).then(attempt);
        });
    }
    return attempt();
  }

  function stream(path, lastId, onEvent, hooks) {
    var state = { stopped: false, controller: null };
    Object.keys(hooks || {}).forEach(function (k) { state[k] = hooks[k]; });
    state.done = follow(path, lastId, onEvent, state);
    state.stop = function () {
      state.stopped = true;
      if (state.controller) { state.controller.abort(); }
    };
    return state;
  }

  function ms(a, b) { return new Date(b).getTime() - new Date(a).getTime(); }

  function span(milliseconds) {
    if (milliseconds === null || isNaN(milliseconds)) { return ""; }
    var s = milliseconds / 1000;
    if (s < 1) { return Math.round(milliseconds) + " ms"; }
    if (s < 60) { return s.toFixed(s < 10 ? 1 : 0) + " s"; }
    if (s < 3600) { return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s"; }
    if (s < 86400) { return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min"; }
    return Math.floor(s / 86400) + " d " + Math.round((s % 86400) / 3600) + " h";
  }

  // Any status gets a badge; one this page does not know is shown as it is named.
  function badge(status) {
    var known = STATUSES.indexOf(status) >= 0 ? status : "other";
    return el("span", { class: "badge badge-" + known, "data-status": status, text: status });
  }

  function progressBar(percent) {
    var value = Math.max(0, Math.min(100, Number(percent) || 0));
    return el("progress", { max: "100", value: String(value), title: value + "%" });
  }

  function message(text, kind) { return el("p", { class: kind || "note", text: text }); }

  // ---- sign-in -------------------------------------------------------------

  function signOut(reason) {
    sessionStorage.removeItem(TOKEN_KEY);
    stopView();
    document.getElementById("signin-error").textContent = reason || "";
    showSignIn();
  }

  function showSignIn() {
    body.dataset.view = "signin";
    clear(main);
    document.getElementById("signin").hidden = false;
    document.getElementById("sign-out").hidden = true;
    document.getElementById("who").textContent = "";
  }

  function signIn(value) {
    var pasted = (value || "").trim().replace(/^Bearer\s+/i, "");
    if (!pasted) { return; }
    sessionStorage.setItem(TOKEN_KEY, pasted);
    document.getElementById("signin-error").textContent = "";
    route();
  }

  function takeTokenFromUrl() {
    var query = new URLSearchParams(window.location.search);
    var given = query.get("access_token");
    if (given === null) { return; }
    query.delete("access_token");
    var rest = query.toString();
    // The token leaves the address bar and the history entry at once.
    history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : "") + window.location.hash);
    if (given) { sessionStorage.setItem(TOKEN_KEY, given); }
  }

  // ---- routing -------------------------------------------------------------

  function stopView() {
    if (current) { current.stop(); current = null; }
  }

  function parseHash() {
    var hash = window.location.hash.replace(/^#\/?/, "");
    var q = hash.indexOf("?");
    var path = q < 0 ? hash : hash.slice(0, q);
    var query = new URLSearchParams(q < 0 ? "" : hash.slice(q + 1));
    return { parts: path.split("/").filter(Boolean), query: query };
  }

  function route() {
    stopView();
    if (!token()) { showSignIn(); return; }
    document.getElementById("signin").hidden = true;
    document.getElementById("sign-out").hidden = false;
    var c = claims();
    document.getElementById("who").textContent = (c.sub || "?") + " @ " + (c.tenant || "?");
    var where = parseHash();
    var name = where.parts[0] || "jobs";
    document.querySelectorAll("[data-nav]").forEach(function (a) {
      a.classList.toggle("active", a.dataset.nav === name || (name === "job" && a.dataset.nav === "jobs"));
    });
    clear(main);
    if (name === "job" && where.parts[1]) { current = jobPage(where.parts[1]); }
    else if (name === "queues") { current = queuesPage(); }
    else if (name === "dlq") { current = dlqPage(); }
    else { current = jobsPage(where.query); }
  }

  // ---- jobs ----------------------------------------------------------------

  function jobsPage(query) {
    body.dataset.view = "jobs";
    var filters = {
      status: query.get("status") || "",
      type: query.get("type") || "",
      case_id: query.get("case_id") || "",
      since: query.get("since") || "",
      until: query.get("until") || ""
    };
    var rows = new Map(); // job id -> { job, tr, cells }
    var tbody = el("tbody", { id: "job-rows" });
    var status = el("span", { id: "stream-state", class: "note", text: "connecting…" });
    var more = el("button", { type: "button", id: "more", hidden: true, text: "Older jobs" });
    var live = null;
    var stopped = false;
    var cursor = null;
    var dirty = new Set();
    var fetching = new Set();
    var frame = 0;

    function filterForm() {
      function field(label, node) { return el("label", {}, [label + " ", node]); }
      var statusSelect = el("select", { name: "status" }, [el("option", { value: "", text: "any" })].concat(
        STATUSES.map(function (s) { return el("option", { value: s, text: s, selected: s === filters.status }); })
      ));
      if (filters.status && STATUSES.indexOf(filters.status) < 0) {
        statusSelect.appendChild(el("option", { value: filters.status, text: filters.status, selected: true }));
      }
      var form = el("form", { id: "filters", class: "filters" }, [
        field("status", statusSelect),
        field("type", el("input", { name: "type", value: filters.type, size: "12" })),
        field("case", el("input", { name: "case_id", value: filters.case_id, size: "12" })),
        field("since", el("input", { name: "since", type: "datetime-local", value: filters.since })),
        field("until", el("input", { name: "until", type: "datetime-local", value: filters.until })),
        el("button", { type: "submit", text: "Filter" }),
        el("a", { href: "#/jobs", text: "clear" })
      ]);
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var q = new URLSearchParams();
        Array.prototype.forEach.call(form.elements, function (input) {
          if (input.name && input.value) { q.set(input.name, input.value); }
        });
        var text = q.toString();
        window.location.hash = "#/jobs" + (text ? "?" + text : "");
      });
      return form;
    }

    function apiQuery(limit) {
      var q = new URLSearchParams({ limit: String(limit) });
      if (filters.status) { q.set("status", filters.status); }
      if (filters.type) { q.set("type", filters.type); }
      if (filters.case_id) { q.set("case_id", filters.case_id); }
      if (filters.since) { q.set("since", new Date(filters.since).toISOString()); }
      if (filters.until) { q.set("until", new Date(filters.until).toISOString()); }
      if (cursor) { q.set("cursor", cursor); }
      return q.toString();
    }

    function accepts(job) {
      if (filters.type && job.type !== filters.type) { return false; }
      if (filters.case_id && job.case_id !== filters.case_id) { return false; }
      if (filters.status && job.status !== filters.status) { return false; }
      if (!job.submitted_at) { return true; }
      var at = new Date(job.submitted_at).getTime();
      if (filters.since && at < new Date(filters.since).getTime()) { return false; }
      if (filters.until && at > new Date(filters.until).getTime()) { return false; }
      return true;
    }

    function makeRow(job) {
      var cells = {
        age: el("td", { class: "age" }),
        status: el("td"),
        progress: el("td"),
        attempt: el("td", { class: "num" }),
        duration: el("td", { class: "num" })
      };
      var tr = el("tr", { "data-job-id": job.id }, [
        el("td", {}, [el("a", { href: "#/job/" + job.id, text: job.id.slice(0, 8) })]),
        el("td", { text: job.type }),
        el("td", { text: job.case_id }),
        cells.status, cells.progress, cells.attempt, cells.age, cells.duration
      ]);
      return { job: job, tr: tr, cells: cells };
    }

    function paint(entry) {
      var job = entry.job, cells = entry.cells;
      entry.tr.dataset.status = job.status;
      clear(cells.status);
      cells.status.appendChild(badge(job.status));
      if (job.error) { cells.status.appendChild(el("div", { class: "error small", text: job.error })); }
      clear(cells.progress);
      cells.progress.appendChild(progressBar(job.progress));
      cells.attempt.textContent = job.attempt + " / " + job.max_attempts;
      tick(entry, Date.now());
    }

    function tick(entry, now) {
      var job = entry.job;
      entry.cells.age.textContent = span(now - new Date(job.submitted_at).getTime());
      var start = job.started_at ? new Date(job.started_at).getTime() : null;
      var end = job.finished_at ? new Date(job.finished_at).getTime() : (TERMINAL[job.status] ? null : now);
      entry.cells.duration.textContent = start && end ? span(end - start) : "";
    }

    function add(job, atTop) {
      var entry = makeRow(job);
      rows.set(job.id, entry);
      paint(entry);
      if (atTop) { tbody.insertBefore(entry.tr, tbody.firstChild); }
      else { tbody.appendChild(entry.tr); }
    }

    // In submission order, newest first; one older than every row shown waits for
    // "Older jobs" when there are more.
    function place(job) {
      var at = new Date(job.submitted_at).getTime();
      var before = null;
      tbody.childNodes.forEach(function (tr) {
        var other = rows.get(tr.dataset.jobId);
        if (!before && other && new Date(other.job.submitted_at).getTime() < at) { before = tr; }
      });
      if (!before && cursor) { return; }
      var entry = makeRow(job);
      rows.set(job.id, entry);
      paint(entry);
      tbody.insertBefore(entry.tr, before);
      trim();
    }

    function trim() {
      while (rows.size > MAX_ROWS && tbody.lastChild) {
        var last = tbody.lastChild;
        rows.delete(last.dataset.jobId);
        tbody.removeChild(last);
      }
    }

    // One repaint a frame, whatever the events' rate.
    function schedule(id) {
      dirty.add(id);
      if (!frame) {
        frame = requestAnimationFrame(function () {
          frame = 0;
          dirty.forEach(function (jobId) {
            var entry = rows.get(jobId);
            if (entry) { paint(entry); }
          });
          dirty.clear();
        });
      }
    }

    function onEvent(e, kind, id) {
      body.dataset.lastPosition = id;
      var entry = rows.get(e.job_id);
      if (e.type === "Submitted") {
        if (entry) { return; }
        var job = {
          id: e.job_id, type: e.job_type, case_id: e.case_id, status: e.status,
          progress: 0, attempt: e.attempt, max_attempts: e.data.max_attempts || 1,
          error: null, submitted_at: e.at, started_at: null, finished_at: null
        };
        if (!accepts(job)) { return; }
        add(job, true);
        trim();
        return;
      }
      if (!entry) {
        // A job that comes to match the status filter (a failure, say) joins the list.
        var comes = { type: e.job_type, case_id: e.case_id, status: e.status, submitted_at: null };
        if (filters.status && e.status === filters.status && accepts(comes) && !fetching.has(e.job_id)) {
          fetching.add(e.job_id);
          api("jobs/" + e.job_id).then(function (answer) {
            fetching.delete(e.job_id);
            if (!stopped && !rows.has(answer.data.id) && accepts(answer.data)) { place(answer.data); }
          }).catch(function () { fetching.delete(e.job_id); });
        }
        return;
      }
      var j = entry.job;
      j.status = e.status;
      j.attempt = e.attempt;
      if (e.type === "Started") { j.started_at = e.at; j.finished_at = null; j.error = null; j.progress = 0; }
      if (e.type === "ProgressReported") { j.progress = e.data.percent; }
      if (e.type === "Succeeded") { j.progress = 100; }
      if (e.type === "RetryRequested") { j.finished_at = null; j.error = null; }
      if (e.data && e.data.error) { j.error = e.data.error; }
      if (TERMINAL[e.status]) { j.finished_at = e.at; }
      schedule(e.job_id);
    }

    function load(first) {
      return api("jobs?" + apiQuery(100)).then(function (answer) {
        answer.data.items.forEach(function (job) { if (!rows.has(job.id)) { add(job, false); } });
        cursor = answer.data.next_cursor;
        more.hidden = !cursor;
        if (first) {
          // From the navigation's start to the frame that shows the first page of jobs.
          requestAnimationFrame(function () {
            if (!body.dataset.firstScreenMs) {
              body.dataset.firstScreenMs = String(Math.round(performance.now()));
            }
          });
          body.dataset.jobs = "loaded";
          openStream(Number(answer.headers.get("X-View-Position") || "0"));
        }
      });
    }

    function openStream(position) {
      if (stopped) { return; }
      body.dataset.lastPosition = String(position);
      live = stream("stream", position, onEvent, {
        onopen: function () { status.textContent = "live"; body.dataset.stream = "open"; },
        onbreak: function () { status.textContent = "reconnecting…"; body.dataset.stream = "broken"; }
      });
      live.done.then(function (why) {
        if (why === "too-old" && !stopped) {
          // Behind further than the feed resumes from: read the page again.
          rows.clear(); clear(tbody); cursor = null;
          load(true);
        }
      });
    }

    more.addEventListener("click", function () { load(false); });
    var ticker = setInterval(function () {
      var now = Date.now();
      rows.forEach(function (entry) { tick(entry, now); });
    }, 1000);

    main.appendChild(el("section", { class: "jobs" }, [
      el("h1", {}, ["Jobs ", status]),
      filterForm(),
      el("table", { class: "grid" }, [
        el("thead", {}, [el("tr", {}, ["job", "type", "case", "status", "progress", "attempt", "age", "duration"].map(
          function (h) { return el("th", { text: h }); }))]),
        tbody
      ]),
      more
    ]));
    load(true).catch(function (error) {
      if (error.message !== "unauthorized") { main.appendChild(message(error.message, "error")); }
    });
    return {
      stop: function () {
        stopped = true;
        clearInterval(ticker);
        if (live) { live.stop(); }
        delete body.dataset.stream;
      }
    };
  }

  // ---- one job -------------------------------------------------------------

  // The trace's page in the tracing UI, when the gateway names one.
  function traceLink(trace) {
    var meta = document.querySelector('meta[name="jobledger-trace-url"]');
    var template = meta ? meta.getAttribute("content") : "";
    if (!template || !/^[0-9a-f]{32}$/.test(trace)) {
      return el("span", { class: "field trace", text: "trace " + trace });
    }
    return el("a", { class: "field trace", href: template.replace("{trace_id}", trace),
      target: "_blank", rel: "noopener noreferrer", text: "trace " + trace });
  }

  function jobPage(jobId) {
    body.dataset.view = "job";
    var live = null;
    var stopped = false;
    var section = el("section", { class: "job" });
    main.appendChild(section);

    function eventItem(e, previous) {
      var data = e.data || {};
      var details = [];
      Object.keys(data).forEach(function (key) {
        if (key === "traceback" || data[key] === "" || data[key] === null) { return; }
        var value = typeof data[key] === "object" ? JSON.stringify(data[key]) : String(data[key]);
        details.push(el("span", { class: key === "error" ? "error" : "field" }, [key + ": " + value]));
      });
      var trace = e.traceparent ? e.traceparent.split("-")[1] : "";
      return el("li", { class: "event", "data-type": e.type }, [
        el("div", { class: "event-head" }, [
          el("time", { text: e.at.replace("T", " ").slice(0, 23) }),
          el("span", { class: "delta", text: previous ? "+" + span(ms(previous.at, e.at)) : "" }),
          el("strong", { text: e.type }),
          el("span", { class: "field", text: "attempt " + e.attempt }),
          el("span", { class: "field actor", text: "by " + e.actor })
        ]),
        el("div", { class: "event-meta" }, [
          el("span", { class: "field", text: "correlation " + e.correlation_id }),
          trace ? traceLink(trace) : null
        ]),
        details.length ? el("div", { class: "event-data" }, details) : null,
        data.traceback ? el("pre", { class: "traceback", text: data.traceback }) : null
      ]);
    }

    function act(action, button) {
      button.disabled = true;
      api("jobs/" + jobId + "/" + action, { method: "POST" })
        .then(function () { render(); })
        .catch(function (error) {
          if (error.message === "unauthorized") { return; }
          section.insertBefore(message(action + ": " + error.message, "error"), section.children[1]);
          button.disabled = false;
        });
    }

    function render() {
      if (live) { live.stop(); live = null; }
      return Promise.all([api("jobs/" + jobId), api("jobs/" + jobId + "/events")]).then(function (answers) {
        if (stopped) { return; }
        var job = answers[0].data, events = answers[1].data;
        clear(section);
        var statusCell = el("span", { id: "job-status" }, [badge(job.status)]);
        var bar = progressBar(job.progress);
        var percent = el("span", { text: job.progress + "% " + (job.progress_message || "") });
        var writable = can("jobs:write");
        var cancel = el("button", { type: "button", id: "cancel", text: "Cancel",
          disabled: !writable || TERMINAL[job.status] === true });
        var retry = el("button", { type: "button", id: "retry", text: "Retry",
          disabled: !writable || !(job.status === "failed" || job.status === "cancelled") });
        cancel.addEventListener("click", function () { act("cancel", cancel); });
        retry.addEventListener("click", function () { act("retry", retry); });
        var list = el("ol", { id: "timeline", class: "timeline" });
        events.forEach(function (e, i) { list.appendChild(eventItem(e, events[i - 1])); });
        section.appendChild(el("h1", {}, [job.type + " ", el("code", { text: job.id })]));
        section.appendChild(el("dl", { class: "facts" }, [
          el("dt", { text: "status" }), el("dd", {}, [statusCell]),
          el("dt", { text: "case" }), el("dd", { text: job.case_id }),
          el("dt", { text: "attempt" }), el("dd", { id: "job-attempt", text: job.attempt + " / " + job.max_attempts }),
          job.priority ? el("dt", { text: "priority" }) : null,
          job.priority ? el("dd", { id: "job-priority", text: job.priority }) : null,
          el("dt", { text: "progress" }), el("dd", {}, [bar, " ", percent]),
          el("dt", { text: "submitted" }), el("dd", { text: job.submitted_at + " by " + job.submitted_by }),
          job.error ? el("dt", { text: "error" }) : null,
          job.error ? el("dd", { class: "error", id: "job-error", text: job.error }) : null
        ]));
        section.appendChild(el("p", { class: "actions" }, [cancel, " ", retry,
          writable ? null : el("span", { class: "note", text: " (Cancel and Retry need jobs:write)" })]));
        section.appendChild(el("h2", { text: "History" }));
        section.appendChild(list);
        body.dataset.job = job.status;
        // Live: the job's own stream replays its history, then follows it; the
        // events already shown are not listed again (counted). The job and its
        // history are two reads, which may be answered either side of a commit (a
        // job read as queued, a history that has its start): the status is set from
        // every event the stream replays, shown ones included, in ledger order.
        var seen = 0;
        var last = events[events.length - 1];
        live = stream("jobs/" + jobId + "/progress", null, function (e) {
          seen += 1;
          if (seen > events.length) {
            var shown = { type: e.type, at: e.at, attempt: e.attempt, actor: e.actor,
              correlation_id: e.correlation_id, traceparent: "", data: e.data };
            list.appendChild(eventItem(shown, last));
            last = shown;
            events.push(shown);
          }
          clear(statusCell);
          statusCell.appendChild(badge(e.status));
          body.dataset.job = e.status;
          document.getElementById("job-attempt").textContent = e.attempt + " / " + job.max_attempts;
          if (e.type === "ProgressReported") {
            bar.value = e.data.percent;
            percent.textContent = e.data.percent + "% " + (e.data.message || "");
          }
          cancel.disabled = !writable || TERMINAL[e.status] === true;
          retry.disabled = !writable || !(e.status === "failed" || e.status === "cancelled");
        });
      }).catch(function (error) {
        if (error.message === "unauthorized") { return; }
        clear(section);
        section.appendChild(message(error.status === 404 ? "No such job." : error.message, "error"));
      });
    }

    render();
    return { stop: function () { stopped = true; if (live) { live.stop(); } delete body.dataset.job; } };
  }

  // ---- queues and workers --------------------------------------------------

  function sparkline(values, label, kind) {
    var width = 180, height = 36;
    var max = Math.max.apply(null, values.concat([1]));
    var step = width / Math.max(values.length - 1, 1);
    var points = values.map(function (v, i) {
      return (i * step).toFixed(1) + "," + (height - 2 - (v / max) * (height - 4)).toFixed(1);
    }).join(" ");
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("width", String(width));
    svg.setAttribute("height", String(height));
    svg.setAttribute("class", "spark spark-" + kind);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label + ", last hour, max " + max + " a minute");
    var line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points);
    svg.appendChild(line);
    var title = document.createElementNS(ns, "title");
    title.textContent = label + " per minute, last hour (max " + max + ")";
    svg.appendChild(title);
    return el("figure", { class: "plot" }, [svg, el("figcaption", { text: label + " (max " + max + "/min)" })]);
  }

  function seconds(value) { return value === null || value === undefined ? "–" : span(value * 1000); }

  function queuesPage() {
    body.dataset.view = "queues";
    var section = el("section", { class: "queues" });
    main.appendChild(section);
    var timer = null;
    var stopped = false;

    function refresh() {
      Promise.all([api("queues"), api("workers")]).then(function (answers) {
        if (stopped) { return; }
        var q = answers[0].data, workers = answers[1].data;
        clear(section);
        section.appendChild(el("h1", { text: "Queues and workers" }));
        var lag = q.projector;
        section.appendChild(el("p", { id: "projector", class: lag.behind > 1000 ? "error" : "note",
          text: "projector: " + lag.behind + " events behind the ledger (view at " + lag.view_position +
            ", ledger at " + lag.ledger_position + ")" }));
        if (q.broker !== "ok") { section.appendChild(message("broker: " + q.broker, "error")); }
        var rows = q.pools.map(function (p) {
          return el("tr", { "data-pool": p.pool }, [
            el("th", { text: p.pool || "(unregistered types)" }),
            el("td", { class: "num", text: p.depth === null ? "–" : String(p.depth) }),
            el("td", { class: "num", text: p.in_flight === null ? "–" : String(p.in_flight) }),
            el("td", { class: "num", text: p.consumers === null ? "–" : String(p.consumers) }),
            el("td", { class: "num", text: String(p.submitted_per_min) }),
            el("td", { class: "num", text: String(p.succeeded_per_min) }),
            el("td", { class: "num", text: String(p.failed_per_min) }),
            el("td", { class: "num", text: seconds(p.wait_p50_s) + " / " + seconds(p.wait_p95_s) })
          ]);
        });
        section.appendChild(el("table", { class: "grid", id: "pools" }, [
          el("thead", {}, [el("tr", {}, ["pool", "depth", "in flight", "consumers", "submitted/min",
            "succeeded/min", "failed/min", "wait p50 / p95"].map(function (h) { return el("th", { text: h }); }))]),
          el("tbody", {}, rows)
        ]));
        section.appendChild(el("p", { class: "note", text: "Depth and in flight: the broker's queue (all tenants). " +
          "Rates: your tenant's, over the last 5 minutes. Waits: first attempts started in the last hour." }));
        q.pools.forEach(function (p) {
          section.appendChild(el("div", { class: "plots" }, [
            el("h3", { text: (p.pool || "(unregistered types)") + ": the last hour" }),
            sparkline(p.series.succeeded, "succeeded", "ok"),
            sparkline(p.series.failed, "failed", "bad"),
            sparkline(p.series.waiting, "waiting", "wait"),
            sparkline(p.series.submitted, "submitted", "in")
          ]));
        });
        var now = Date.now();
        section.appendChild(el("h2", { text: "Live workers" }));
        section.appendChild(el("table", { class: "grid", id: "workers" }, [
          el("thead", {}, [el("tr", {}, ["worker", "pool", "up for", "last heartbeat", "in flight", "your jobs"].map(
            function (h) { return el("th", { text: h }); }))]),
          el("tbody", {}, workers.map(function (w) {
            return el("tr", { "data-worker": w.worker_id }, [
              el("td", {}, [el("code", { text: w.worker_id })]),
              el("td", { text: w.pool }),
              el("td", { text: span(now - new Date(w.started_at).getTime()) }),
              el("td", { text: span(now - new Date(w.heartbeat_at).getTime()) + " ago" }),
              el("td", { class: "num", text: String(w.in_flight_count) }),
              el("td", {}, w.in_flight.map(function (id) {
                return el("a", { href: "#/job/" + id, class: "chip", text: id.slice(0, 8) });
              }))
            ]);
          }))
        ]));
        if (!workers.length) { section.appendChild(message("No live worker.", "error")); }
        body.dataset.queues = "loaded";
      }).catch(function (error) {
        if (error.message === "unauthorized") { return; }
        clear(section);
        section.appendChild(message(error.status === 403 ? "This page needs the jobs:admin scope." : error.message, "error"));
      }).then(function () {
        if (!stopped) { timer = setTimeout(refresh, 5000); }
      });
    }

    refresh();
    return { stop: function () { stopped = true; clearTimeout(timer); delete body.dataset.queues; } };
  }

  // ---- dead letters --------------------------------------------------------

  function dlqPage() {
    body.dataset.view = "dlq";
    var section = el("section", { class: "dlq" });
    main.appendChild(section);
    var stopped = false;
    var outcome = el("div", { id: "redrive-outcome" });

    function redrive(ids) {
      return api("dlq/redrive", { method: "POST", json: { job_ids: ids } }).then(function (answer) {
        clear(outcome);
        answer.data.forEach(function (r) {
          outcome.appendChild(el("p", { class: r.outcome === "retried" ? "ok" : "error", "data-outcome": r.outcome,
            text: r.job_id.slice(0, 8) + ": " + r.outcome + (r.detail ? " (" + r.detail + ")" : "") }));
        });
        return refresh();
      }).catch(function (error) {
        if (error.message !== "unauthorized") { clear(outcome); outcome.appendChild(message(error.message, "error")); }
      });
    }

    function refresh() {
      return api("dlq?limit=200").then(function (answer) {
        if (stopped) { return; }
        var dead = answer.data;
        clear(section);
        section.appendChild(el("h1", { text: "Dead letters" }));
        section.appendChild(outcome);
        var selectAll = el("input", { type: "checkbox", id: "select-all", title: "select all" });
        var selected = el("button", { type: "button", id: "redrive-selected", text: "Re-drive selected" });
        var rows = dead.map(function (d) {
          var box = el("input", { type: "checkbox", class: "pick", value: d.job_id || "", disabled: d.superseded || !d.job_id });
          var button = el("button", { type: "button", class: "redrive", text: "Re-drive", disabled: d.superseded });
          button.addEventListener("click", function () { button.disabled = true; redrive([d.job_id]); });
          return el("tr", { "data-job-id": d.job_id || "", "data-superseded": d.superseded ? "yes" : "no" }, [
            el("td", {}, [box]),
            el("td", {}, [el("a", { href: "#/job/" + d.job_id, text: (d.job_id || "").slice(0, 8) })]),
            el("td", { text: d.job_type || "" }),
            el("td", { class: "num", text: d.attempt === null ? "" : String(d.attempt) }),
            el("td", { text: d.reason }),
            el("td", {}, [d.job_status ? badge(d.job_status) : null]),
            el("td", { class: "error", text: d.job_error || "" }),
            el("td", {}, [d.superseded ? el("span", { class: "note", text: "job has moved on" }) : button])
          ]);
        });
        selectAll.addEventListener("change", function () {
          section.querySelectorAll("input.pick:not([disabled])").forEach(function (b) { b.checked = selectAll.checked; });
        });
        selected.addEventListener("click", function () {
          var ids = Array.prototype.map.call(section.querySelectorAll("input.pick:checked"), function (b) { return b.value; });
          if (ids.length) { selected.disabled = true; redrive(ids); }
        });
        section.appendChild(el("table", { class: "grid", id: "dead" }, [
          el("thead", {}, [el("tr", {}, [el("th", {}, [selectAll])].concat(
            ["job", "type", "attempt", "reason", "job status", "error", ""].map(function (h) { return el("th", { text: h }); })))]),
          el("tbody", {}, rows)
        ]));
        section.appendChild(el("p", { class: "actions" }, [selected,
          el("span", { class: "note", text: " Re-driving records the job's retry in the ledger under your name; " +
            "the dispatcher sends it to its pool again." })]));
        if (!dead.length) { section.appendChild(message("The dead-letter queue holds none of your jobs.")); }
        body.dataset.dlq = "loaded";
      }).catch(function (error) {
        if (error.message === "unauthorized") { return; }
        clear(section);
        section.appendChild(message(error.status === 403 ? "This page needs the jobs:admin scope." : error.message, "error"));
      });
    }

    refresh();
    return { stop: function () { stopped = true; delete body.dataset.dlq; } };
  }

  // ---- start ---------------------------------------------------------------

  document.getElementById("signin-form").addEventListener("submit", function (event) {
    event.preventDefault();
    signIn(document.getElementById("token").value);
    document.getElementById("token").value = "";
  });
  document.getElementById("sign-out").addEventListener("click", function () { signOut(""); });
  window.addEventListener("hashchange", route);
  takeTokenFromUrl();
  route();
})();
