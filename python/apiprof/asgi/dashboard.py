"""The dashboard under the middleware's ``dashboard_path``: its routes (the page, the
statistics and profiles API) and the page, one self-contained HTML document.

The statistics are embedded as JSON; a small script renders the route table, sorts it
by the column clicked (or by ``?sort=p95|total|count|errors`` in the URL) and links each
captured profile to its HTML report (``api/profiles/ID/html``, apiprof report's page made
from the kept document) and its JSON document, carrying the token of the page URL.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from typing import Any

from .http import Scope, Send, respond, respond_gzip
from .store import ProfileStore

HTML_SUFFIX = "/html"

PROFILES_API = "/api/profiles"
STATS_API = "/api/stats"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<title>apiprof: routes</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f3f3f3; }
th.sortable { cursor: pointer; text-decoration: underline dotted; }
th.sorted { background: #dde7f5; }
td.text, th.text { text-align: left; }
tr.errors td.err { color: #b00; font-weight: bold; }
body:not(.memory) .mem { display: none; }
body:not(.stalls) .stall { display: none; }
body:not(.waits) .wait { display: none; }
td.stall.some { color: #b00; font-weight: bold; }
tr.leak td.live { color: #b00; font-weight: bold; }
#leaks { color: #b00; }
</style></head>
<body>
<h1>apiprof: routes</h1>
<p id="summary"></p>
<table id="routes"><thead><tr>
<th class="text">route</th><th class="text">method</th><th class="text">status</th>
<th class="sortable" data-sort="count">count</th>
<th class="sortable" data-sort="errors">errors</th>
<th>p50 ms</th><th>p90 ms</th>
<th class="sortable" data-sort="p95">p95 ms</th>
<th>p99 ms</th><th>max ms</th>
<th class="sortable" data-sort="total">total ms</th>
<th>cpu ms</th><th>bytes out</th>
<th class="stall sortable" data-sort="stalls"
    title="steps of this route's code that blocked the event loop for stall_ms or more"
    >stalls</th>
<th class="stall" title="the longest of them">stall max ms</th>
<th class="text stall" title="how many stalls lasted up to each bound (ms)">stalls by ms</th>
<th class="text stall" title="the line the event loop's thread was at during the stalls
    (most stall time first; hover for the call path)">stalled at</th>
<th class="stall" title="how long other requests in flight waited while this route's steps
    stalled the loop">others held ms</th>
<th class="stall" title="how long this route's requests waited on other requests' stalls">
    held up ms</th>
<th class="text wait" title="where this route's profiled requests waited, per profiled
    request (ms; docs/waits.md), the largest kinds first">waits/profiled req</th>
<th class="mem" title="bytes allocated per request (sampled estimate)">alloc/req</th>
<th class="mem" title="bytes still alive when each request finished, per request">kept/req</th>
<th class="mem sortable" data-sort="live"
    title="of what this route's requests allocated, still alive now">live now</th>
<th class="text">profiles</th>
</tr></thead><tbody></tbody></table>
<ul id="leaks"></ul>
<p id="leak-hint" hidden>The line that keeps it: <code>apiprof run --memory -m uvicorn
...</code>, then <code>apiprof report FILE --route ROUTE --metric live</code>
(docs/memory.md).</p>
<h2>Captured profiles</h2>
<table id="profiles"><thead><tr>
<th class="text">id</th><th class="text">kind</th><th class="text">route</th>
<th class="text">path</th><th>status</th><th>wall ms</th><th class="text">download</th>
</tr></thead><tbody></tbody></table>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const BASE = __BASE__;
const params = new URLSearchParams(location.search);
const TOKEN = params.get("apiprof") || "";
const KEYS = {count: "count", errors: "errors", p95: "p95_ns", total: "total_ns",
              live: "live_bytes", stalls: "stall_ns"};
let sortKey = KEYS[params.get("sort")] ? params.get("sort") : "total";

function ms(ns) { return (ns / 1e6).toFixed(2); }
function bytes(n) {
  for (const [unit, size] of [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]])
    if (n >= size) return (n / size).toFixed(1) + " " + unit;
  return Math.floor(n) + " B";
}
const LEAKS = new Set((DATA.leak_suspects || []).map(
  r => r.route + " " + r.method + " " + r.status));
function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}
function profileLink(id, suffix, text) {
  const a = document.createElement("a");
  a.href = BASE + "/api/profiles/" + encodeURIComponent(id) +
    (suffix === undefined ? "/html" : suffix) +
    (TOKEN ? "?apiprof=" + encodeURIComponent(TOKEN) : "");
  a.textContent = text || id;
  return a;
}
function stallSpread(r) {
  const hist = r.stall_hist || [];
  const cells = hist.map(([le, n], i) => !n ? "" :
    (le !== null ? "<=" + le / 1e6 : ">" + hist[i - 1][0] / 1e6) + ":" + n);
  return cells.filter(c => c).join(" ") || "-";
}
function stallSite(r) {
  const sites = r.stall_sites || [];
  if (!sites.length) return ["-", ""];
  const t = sites[0], base = t.file.split("/").pop() || "?";
  return [base + ":" + t.line + " " + t.function + " (" + t.stalls + " of " + r.stalls + ")" +
          (sites.length > 1 ? " +" + (sites.length - 1) + " more" : ""),
          sites.map(s => s.path + "  (" + s.file + ":" + s.line + ", " + s.stalls +
                    " stalls, max " + ms(s.max_ns) + " ms)").join("\\n")];
}
function waits(r) {
  const n = r.waited || 0;
  if (!n) return "-";
  const kinds = Object.entries(r.waits || {}).filter(([k, v]) => v / n >= 5000)
    .sort((a, b) => b[1] - a[1] ||
    a[0].localeCompare(b[0])).slice(0, 3);
  if (!kinds.length) return "none (of " + n + ")";
  return kinds.map(([k, v]) => k + " " + ms(v / n)).join(", ") + " (of " + n + ")";
}
function render() {
  const key = KEYS[sortKey];
  const rows = DATA.routes.slice().sort((a, b) => b[key] - a[key] ||
    a.route.localeCompare(b.route));
  const body = document.querySelector("#routes tbody");
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    if (r.errors) tr.className = "errors";
    cell(tr, r.route, "text route"); cell(tr, r.method, "text"); cell(tr, r.status, "text");
    cell(tr, r.count); cell(tr, r.errors, "err");
    for (const k of ["p50_ns", "p90_ns", "p95_ns", "p99_ns", "max_ns", "total_ns", "cpu_ns"])
      cell(tr, ms(r[k]));
    cell(tr, r.bytes_out);
    cell(tr, r.stalls || 0, r.stalls ? "stall some" : "stall");
    cell(tr, ms(r.stall_max_ns || 0), "stall");
    cell(tr, stallSpread(r), "text stall");
    const [site, path] = stallSite(r);
    cell(tr, site, "text stall site").title = path;
    cell(tr, ms(r.stall_cost_ns || 0), "stall");
    cell(tr, ms(r.delayed_ns || 0), "stall");
    cell(tr, waits(r), "text wait");
    const n = r.mem_requests || 0;
    cell(tr, n ? bytes(r.alloc_bytes / n) : "-", "mem");
    cell(tr, n ? bytes(r.retained_bytes / n) : "-", "mem");
    cell(tr, bytes(r.live_bytes || 0), "mem live");
    if (LEAKS.has(r.route + " " + r.method + " " + r.status)) tr.classList.add("leak");
    const links = cell(tr, "", "text");
    for (const p of DATA.profiles)
      if (p.route === r.route && p.method === r.method) {
        links.appendChild(profileLink(p.id));
        links.appendChild(document.createTextNode(" "));
      }
    body.appendChild(tr);
  }
  for (const th of document.querySelectorAll("th.sortable"))
    th.classList.toggle("sorted", th.dataset.sort === sortKey);
  document.body.dataset.sort = sortKey;
}
for (const th of document.querySelectorAll("th.sortable"))
  th.addEventListener("click", () => { sortKey = th.dataset.sort; render(); });
const pbody = document.querySelector("#profiles tbody");
for (const p of DATA.profiles) {
  const tr = document.createElement("tr");
  cell(tr, "", "text").appendChild(profileLink(p.id));
  cell(tr, p.kind, "text"); cell(tr, p.route, "text"); cell(tr, p.path, "text");
  cell(tr, p.status); cell(tr, ms(p.wall_ns));
  cell(tr, "", "text").appendChild(profileLink(p.id, "", "json"));
  pbody.appendChild(tr);
}
document.body.classList.toggle("memory", DATA.routes.some(r => r.mem_requests > 0));
document.body.classList.toggle("stalls", DATA.routes.some(r => r.stalls > 0));
document.body.classList.toggle("waits", DATA.routes.some(r => r.waited > 0));
for (const r of DATA.leak_suspects || []) {
  const li = document.createElement("li");
  li.textContent = "leak suspect: " + r.method + " " + r.route + " keeps " +
    bytes(r.kept_per_request) + " per request: " + bytes(r.live_bytes) +
    " allocated by its " + r.mem_requests + " requests is still alive";
  document.getElementById("leaks").appendChild(li);
  document.getElementById("leak-hint").hidden = false;
}
document.getElementById("summary").textContent =
  DATA.routes.reduce((n, r) => n + r.count, 0) + " requests, " + DATA.routes.length +
  " rows, " + DATA.workers + " worker(s)" + (DATA.warning ? "; " + DATA.warning : "");
render();
</script>
</body></html>
"""


_PLACEHOLDER = re.compile("__BASE__|__DATA__")


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def report_page(record: dict[str, Any], document: bytes) -> bytes | None:
    """The HTML report (apiprof report's) of a kept profile's gzipped JSON document, or
    None when the document holds no profile (an error note, another profiler's JSON)."""
    from .. import _core

    try:
        profile = _core.loads(gzip.decompress(document))
    except (ValueError, OSError, EOFError):
        return None
    title = (f"{record.get('method', '')} {record.get('path', '')} -> {record.get('status', '')}"
             f", {record.get('wall_ns', 0) / 1e6:.2f} ms (profile {record.get('id', '')})")
    return bytes(profile.report("html", title))


def render(data: dict[str, Any], base_path: str) -> str:
    """The dashboard page for ``data`` (see ProfilerMiddleware.dashboard_data)."""
    # One pass over the template: a placeholder inside the substituted text stays text.
    values = {"__BASE__": _script_json(base_path), "__DATA__": _script_json(data)}
    return _PLACEHOLDER.sub(lambda m: values[m.group(0)], _PAGE)


class Dashboard:
    """Serves authorized requests under ``base`` (the dashboard path): a kept profile
    (``/api/profiles/ID``) always; the page, ``/api/profiles`` and ``/api/stats`` only
    when ``pages`` (dashboard=True). ``data`` gives what the page shows."""

    def __init__(self, base: str, store: ProfileStore, data: Callable[[], dict[str, Any]],
                 pages: bool) -> None:
        self.base = base
        self.store = store
        self.data = data
        self.pages = pages

    async def serve(self, scope: Scope, send: Send) -> bool:
        """Answers the request; False if its path is not one of the dashboard's (the app
        then serves it)."""
        sub = scope["path"][len(self.base):]
        if sub.startswith(PROFILES_API + "/"):
            profile_id = sub[len(PROFILES_API) + 1:]
            html = profile_id.endswith(HTML_SUFFIX)
            kept = self.store.get(profile_id[:-len(HTML_SUFFIX)] if html else profile_id)
            page = report_page(*kept) if kept is not None and html else None
            if kept is None:
                await respond(send, 404, b'{"error": "no such profile"}', "application/json")
            elif not html:
                await respond_gzip(send, scope, kept[1])
            elif page is None:
                error = kept[0].get("error", "the document holds no apiprof profile")
                await respond(send, 404, json.dumps({"error": error}).encode(),
                              "application/json")
            else:
                await respond(send, 200, page, "text/html; charset=utf-8")
            return True
        if not self.pages:
            return False
        if sub == PROFILES_API:
            await respond(send, 200, json.dumps(self.store.index()).encode(), "application/json")
        elif sub == STATS_API:
            await respond(send, 200, json.dumps(self.data()).encode(), "application/json")
        elif sub in ("", "/"):
            page = render(self.data(), self.base)
            await respond(send, 200, page.encode(), "text/html; charset=utf-8")
        else:
            return False
        return True
