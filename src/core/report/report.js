// report.js -- the interactive views of apiprof's HTML report, drawn from the profile data embedded beside it.
"use strict";
(function () {
  var D = JSON.parse(document.getElementById("apiprof-data").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var S = D.strs, NF = D.frames.length / 6;
  // Units of the view metrics, from the metric catalogue the writer embeds.
  var SHORT_UNIT = { nanoseconds: "ns", bytes: "B", count: "" };
  var UNITS = {};
  Object.keys(D.catalogue).forEach(function (m) { UNITS[m] = SHORT_UNIT[D.catalogue[m].unit]; });

  // ---- frames -------------------------------------------------------------
  function fQual(f) { return S[D.frames[f * 6]]; }
  function fFile(f) { return S[D.frames[f * 6 + 1]]; }
  function fLine(f) { return D.frames[f * 6 + 2]; }
  function fLineno(f) { return D.frames[f * 6 + 3]; }
  function fKind(f) { return D.frames[f * 6 + 4]; }
  function fFunc(f) { return D.frames[f * 6 + 5]; }
  var labels = new Array(NF);
  for (var f = 0; f < NF; f++) {
    labels[f] = f === 0 ? "all" : fQual(f) + (fLineno(f) ? ":" + fLineno(f) : "");
  }
  // A view node's name: its frame's, and for a folded run of library frames how
  // many more it stands for.
  function vlabel(v) {
    var s = labels[V.frame[v]];
    return V.folded && V.folded[v] ? s + " (+" + V.folded[v] + " library)" : s;
  }
  function where(f) {
    return fKind(f) === 1 ? fFile(f) + ":" + (fLineno(f) || fLine(f)) : fFile(f);
  }
  function fmt(v, m) { return fmtShort(v, UNITS[m]); }
  function fmtUnit(v, unit) { return v ? fmtShort(v, SHORT_UNIT[unit]) : "-"; }
  function fmtShort(v, u) {
    if (u === "ns") {
      if (v >= 1e9) return (v / 1e9).toPrecision(3) + " s";
      if (v >= 1e6) return (v / 1e6).toPrecision(3) + " ms";
      if (v >= 1e3) return (v / 1e3).toPrecision(3) + " us";
      return v + " ns";
    }
    if (u === "B") {
      if (v >= 1073741824) return (v / 1073741824).toPrecision(3) + " GiB";
      if (v >= 1048576) return (v / 1048576).toPrecision(3) + " MiB";
      if (v >= 1024) return (v / 1024).toPrecision(3) + " KiB";
      return v + " B";
    }
    return String(v);
  }
  function pct(v, t) { return t > 0 ? (100 * v / t).toFixed(1) + "%" : "-"; }
  // Text for HTML/SVG markup built as a string: safe in element text and in single- or
  // double-quoted attribute values alike (names come from the profiled program).
  var ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) { return ESC[c]; });
  }
  function hue(s) {
    var h = 2166136261;
    for (var i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619) >>> 0;
    return "rgb(" + (205 + h % 50) + "," + ((h >>> 8) % 190 + 30) + "," + ((h >>> 16) % 60) + ")";
  }

  // ---- trees: decode once, merge the selected ones into the view ------------
  var trees = D.trees.map(function (t) {
    var n = t.n, parent = new Int32Array(n), frame = new Int32Array(n);
    parent[0] = -1;
    for (var i = 1; i < n; i++) { parent[i] = i - t.pd[i - 1]; frame[i] = t.fr[i - 1]; }
    return { labels: t.labels, n: n, parent: parent, frame: frame, calls: t.calls, hits: t.hits, m: t.m,
      ft: t.ft, cls: t.cls || "" };
  });
  // idle: show idle waiting (pool workers waiting for work, the loop waiting for I/O);
  // fold: fold each run of library frames into its first frame.
  var state = { metric: D.metric, filters: {}, zoom: 0, search: null, focus: -1, icicle: false,
    view: "overview", drawn: 0, idle: false, fold: true };
  var V = null;   // the view tree

  function selectedTrees() {
    return trees.filter(function (t) {
      for (var k in state.filters) if (state.filters[k] && t.labels[k] !== state.filters[k]) return false;
      return true;
    });
  }

  // The view tree: the selected trees merged by call path, without idle subtrees
  // (unless shown) and with each run of library frames folded into its first frame
  // (unless unfolded; a synthetic wait frame of the run, <await Future> or <gil wait>,
  // stays in view below it). V.lib marks folded library nodes, V.folded how many frames
  // each folded node stands for beyond its own (the longest run folded into it, so that
  // trees merged into the view do not add theirs up).
  function buildView() {
    var sel = selectedTrees(), ms = D.metrics;
    var total = 1;
    sel.forEach(function (t) { total += t.n; });
    var parent = new Int32Array(total), frame = new Int32Array(total), calls = new Float64Array(total);
    var hits = new Float64Array(total), lib = new Uint8Array(total), folded = new Int32Array(total);
    var self = {}, hidden = 0, n = 1, index = new Map();
    ms.forEach(function (m) { self[m] = new Float64Array(total); });
    parent[0] = -1;
    sel.forEach(function (t) {
      var map = new Int32Array(t.n), run = new Int32Array(t.n), wall = t.m.wall;
      for (var i = 1; i < t.n; i++) {
        var vp = map[t.parent[i]], c = t.cls.charCodeAt(i) - 48, v;
        if (vp < 0 || (c === 2 && !state.idle)) {   // idle, or under an idle node
          map[i] = -1;
          if (wall) hidden += wall[i - 1];
          continue;
        }
        // a synthetic wait (<await Future>, <gil wait>) stays in view below a folded run
        var wait = fKind(t.frame[i]) === 4;
        if (c === 1 && state.fold && vp > 0 && lib[vp] && !wait) {
          v = vp;   // folded into the run's first library frame
          run[i] = run[t.parent[i]] + 1;
          if (run[i] > folded[v]) folded[v] = run[i];
        } else {
          var key = vp * NF + t.frame[i];
          v = index.get(key);
          if (v === undefined) {
            v = n++; index.set(key, v); parent[v] = vp; frame[v] = t.frame[i];
            lib[v] = c === 1 && state.fold && !wait ? 1 : 0;
          }
          calls[v] += t.calls[i - 1];
        }
        map[i] = v;
        if (t.hits) hits[v] += t.hits[i - 1];
        ms.forEach(function (m) { var src = t.m[m]; if (src) self[m][v] += src[i - 1]; });
      }
    });
    V = { n: n, parent: parent, frame: frame, calls: calls, hits: hits, self: self, lib: lib,
      folded: folded, hiddenIdle: hidden };
    mergeFunctions(sel);
    computeMetric();
  }

  // Inclusive values of the current metric, children sorted by them, depths.
  function computeMetric() {
    var n = V.n, s = V.self[state.metric], incl = new Float64Array(n);
    for (var i = 0; i < n; i++) incl[i] = s[i];
    for (i = n - 1; i > 0; i--) incl[V.parent[i]] += incl[i];
    var cstart = new Int32Array(n + 1), kids = new Int32Array(Math.max(n - 1, 0)), fill;
    for (i = 1; i < n; i++) cstart[V.parent[i] + 1]++;
    for (i = 0; i < n; i++) cstart[i + 1] += cstart[i];
    fill = cstart.slice(0, n);
    for (i = 1; i < n; i++) kids[fill[V.parent[i]]++] = i;
    var depth = new Int32Array(n), maxDepth = 0;
    for (i = 1; i < n; i++) {
      depth[i] = depth[V.parent[i]] + 1;
      if (depth[i] > maxDepth) maxDepth = depth[i];
    }
    for (i = 0; i < n; i++) {
      if (cstart[i + 1] - cstart[i] > 1) {
        var seg = Array.prototype.slice.call(kids, cstart[i], cstart[i + 1]);
        seg.sort(function (a, b) { return incl[b] - incl[a] || a - b; });
        for (var k = 0; k < seg.length; k++) kids[cstart[i] + k] = seg[k];
      }
    }
    V.incl = incl; V.cstart = cstart; V.kids = kids; V.depth = depth; V.maxDepth = maxDepth;
    V.total = incl[0];
    if (state.zoom >= n) state.zoom = 0;
    computeFunctions();
  }

  // A line-level node under a node of its own function (a line profile's line
  // nodes, AP_M_HITS): it refines that node, it is not a call.
  function refines(v) {
    var f = V.frame[v], p = V.parent[v];
    return fLineno(f) !== 0 && p > 0 && fFunc(V.frame[p]) === fFunc(f);
  }

  // ---- function table: the writer's per-tree tables, added up -----------------
  // Each tree carries its function table as the model computes it (pstats
  // semantics, recursion counted once); every figure of it is a sum over
  // trees, so the table of a filter's selection is the sum of its trees'.
  function mergeFunctions(sel) {
    var rows = new Map(), edges = new Map(), list = [];
    function rowOf(fn) {
      var r = rows.get(fn);
      if (!r) {
        r = { fn: fn, calls: 0, prim: 0, s: {}, t: {}, m: {}, self: 0, total: 0, await: 0,
          callers: [], callees: [] };
        D.metrics.forEach(function (m) { r.s[m] = 0; r.t[m] = 0; });
        D.columns.forEach(function (c) { r.m[c.name] = 0; });
        rows.set(fn, r); list.push(r);
      }
      return r;
    }
    sel.forEach(function (tree) {
      var ft = tree.ft, nr = ft.fr.length;
      for (var i = 0; i < nr; i++) {
        var r = rowOf(ft.fr[i]);
        r.calls += ft.calls[i]; r.prim += ft.prim[i];
        for (var m in ft.s) { r.s[m] += ft.s[m][i]; r.t[m] += ft.t[m][i]; }
        for (var c in ft.m) r.m[c] += ft.m[c][i];
      }
      for (var j = 0; j < ft.ec.length; j++) {
        var from = ft.fr[ft.e[2 * j]], to = ft.fr[ft.e[2 * j + 1]], key = from * NF + to, e = edges.get(key);
        if (!e) {
          e = { from: from, to: to, calls: 0, t: {}, total: 0 };
          D.metrics.forEach(function (m) { e.t[m] = 0; });
          edges.set(key, e); rowOf(from).callees.push(e); rowOf(to).callers.push(e);
        }
        e.calls += ft.ec[j];
        for (m in ft.et) e.t[m] += ft.et[m][j];
      }
    });
    V.funcs = list; V.funcIndex = rows; V.edges = edges;
  }
  // The self and total of the shown metric, for the table and the call graph.
  function computeFunctions() {
    var m = state.metric;
    V.funcs.forEach(function (r) {
      r.self = r.s[m]; r.total = r.t[m]; r.await = r.s.await || 0;
    });
    V.edges.forEach(function (e) { e.total = e.t[m]; });
  }

  // ---- search ---------------------------------------------------------------
  var matchFrame = null;
  function applySearch(q) {
    state.search = q || null;
    matchFrame = null;
    if (q) {
      var re;
      try { re = new RegExp(q, "i"); } catch (e) { re = null; }
      matchFrame = new Uint8Array(NF);
      for (var f = 1; f < NF; f++) {
        var hit = re ? re.test(labels[f]) : labels[f].indexOf(q) >= 0;
        if (hit) matchFrame[f] = 1;
      }
    }
    var info = "";
    state.matches = 0;
    if (matchFrame) {
      // Share of the total under matched frames, nested matches counted once.
      var sum = 0, count = 0, under = new Uint8Array(V.n);
      for (var i = 1; i < V.n; i++) {
        var m = matchFrame[V.frame[i]];
        if (m) count++;
        if (under[V.parent[i]]) under[i] = 1;
        else if (m) { under[i] = 1; sum += V.incl[i]; }
      }
      state.matches = count;
      info = count + " nodes matched, " + pct(sum, V.total) + " of " + state.metric;
    }
    $("matched").textContent = info;
    redraw();
  }

  // ---- flame graph / icicle on a canvas --------------------------------------
  var canvas = $("flame"), ctx = canvas.getContext("2d"), ROW = 18, rowsHit = [];
  function drawFlame() {
    var box = $("flame-box"), W = Math.max(box.clientWidth, 300), dpr = window.devicePixelRatio || 1;
    var zoom = state.zoom, scale = V.incl[zoom] > 0 ? W / V.incl[zoom] : 0;
    // Only as tall as the deepest frame wide enough to draw.
    var levels = V.depth[zoom] + 1, stack = [zoom];
    while (stack.length) {
      var v = stack.pop();
      if (V.depth[v] + 1 > levels) levels = V.depth[v] + 1;
      for (var k = V.cstart[v]; k < V.cstart[v + 1] && V.incl[V.kids[k]] * scale >= 0.3; k++) stack.push(V.kids[k]);
    }
    var H = levels * ROW;
    state.levels = levels;
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    canvas.style.height = H + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    ctx.font = "11px ui-monospace, monospace";
    ctx.textBaseline = "middle";
    rowsHit = [];
    for (var d = 0; d < levels; d++) rowsHit.push([]);
    var drawn = 0;
    function yOf(depth) { return state.icicle ? depth * ROW : H - (depth + 1) * ROW; }
    function box_(node, x, w, dim) {
      var y = yOf(V.depth[node]), f = V.frame[node];
      var hit = matchFrame && matchFrame[f];
      ctx.fillStyle = hit ? "rgb(220,0,220)" : node === 0 ? "#c8c8c0" : V.lib[node] ? "#d9d6cc" :
        hue(labels[f]);
      ctx.globalAlpha = dim ? 0.55 : 1;
      ctx.fillRect(x, y + 1, Math.max(w - 0.5, 0.5), ROW - 2);
      if (w > 28) {
        var room = Math.floor((w - 6) / 6.7), s = vlabel(node);
        if (s.length > room) s = s.slice(0, Math.max(room - 2, 0)) + "..";
        ctx.fillStyle = "#000";
        ctx.fillText(s, x + 3, y + ROW / 2);
      }
      ctx.globalAlpha = 1;
      rowsHit[V.depth[node]].push([x, w, node]);
      drawn++;
    }
    // Ancestors of the zoomed node span the whole width, dimmed.
    for (var a = V.parent[zoom]; a >= 0; a = V.parent[a]) box_(a, 0, W, true);
    stack = [zoom];
    var xs = [0];
    while (stack.length) {
      var node = stack.pop(), x = xs.pop(), w = V.incl[node] * scale;
      box_(node, x, w, false);
      var cx = x;
      for (var k = V.cstart[node]; k < V.cstart[node + 1]; k++) {
        var c = V.kids[k], cw = V.incl[c] * scale;
        if (cw < 0.3) break;   // sorted: the rest are smaller still (as in the pre-pass)
        stack.push(c); xs.push(cx);
        cx += cw;
      }
    }
    for (d = 0; d < levels; d++) rowsHit[d].sort(function (p, q) { return p[0] - q[0]; });
    // The root is at the bottom of a flame graph: show it first.
    if (!state.icicle) box.scrollTop = box.scrollHeight;
    state.drawn = drawn;
    $("reset-zoom").disabled = zoom === 0;
    $("flame-info").textContent = zoom === 0 ? "click a frame to zoom" :
      "zoomed on " + labels[V.frame[zoom]] + " (" + pct(V.incl[zoom], V.total) + ")";
  }
  function nodeAt(px, py) {
    var H = state.levels * ROW, d = state.icicle ? Math.floor(py / ROW) : Math.floor((H - py) / ROW);
    var row = rowsHit[d];
    if (!row) return -1;
    var lo = 0, hi = row.length - 1;
    while (lo <= hi) {
      var mid = (lo + hi) >> 1, r = row[mid];
      if (px < r[0]) hi = mid - 1;
      else if (px >= r[0] + Math.max(r[1], 1)) lo = mid + 1;
      else return r[2];
    }
    return -1;
  }
  function nodeText(v) {
    var f = V.frame[v], s = vlabel(v) + "\n";
    if (v !== 0) s += where(f) + "\n";
    s += state.metric + ": " + fmt(V.incl[v], state.metric) + " (" + pct(V.incl[v], V.total) + ")";
    s += ", self " + fmt(V.self[state.metric][v], state.metric);
    if (v !== 0) s += "\ncalls: " + V.calls[v];
    return s;
  }
  function showTip(e, text) {
    var tip = $("tip");
    if (!text) { tip.style.display = "none"; return; }
    tip.textContent = text;
    tip.style.display = "block";
    tip.style.left = Math.min(e.clientX + 12, window.innerWidth - 380) + "px";
    tip.style.top = (e.clientY + 14) + "px";
  }
  function canvasPos(e) {
    var r = canvas.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  }
  canvas.addEventListener("mousemove", function (e) {
    var p = canvasPos(e), v = nodeAt(p[0], p[1]);
    showTip(e, v >= 0 ? nodeText(v) : null);
  });
  canvas.addEventListener("mouseleave", function (e) { showTip(e, null); });
  canvas.addEventListener("click", function (e) {
    var p = canvasPos(e), v = nodeAt(p[0], p[1]);
    if (v < 0) return;
    state.zoom = v;
    if (v !== 0) state.focus = fFunc(V.frame[v]);
    drawFlame();
  });
  $("reset-zoom").addEventListener("click", function () { state.zoom = 0; drawFlame(); });
  $("icicle").addEventListener("change", function (e) { state.icicle = e.target.checked; drawFlame(); });

  // ---- call tree ---------------------------------------------------------------
  var TREE_KIDS = 200;
  function treeRow(v, depth) {
    var div = document.createElement("div"), f = V.frame[v];
    var nk = V.cstart[v + 1] - V.cstart[v];
    div.className = "tn";
    div.dataset.node = v;
    var hit = matchFrame && matchFrame[f] ? " hit" : "";
    div.innerHTML = "<span class=v>" + fmt(V.incl[v], state.metric) + " " + pct(V.incl[v], V.total) +
      "</span><span class=c>" + V.calls[v] + "</span>" +
      "<span style='padding-left:" + (depth * 14) + "px'></span><span class=tg>" + (nk ? "\u25b8" : " ") +
      "</span><span class='" + hit + (V.lib[v] ? " lib" : "") + "' title='" + esc(where(f)) + "'>" +
      esc(vlabel(v)) + "</span>";
    div.dataset.depth = depth;
    return div;
  }
  function expand(div, open) {
    var v = +div.dataset.node, depth = +div.dataset.depth, tg = div.querySelector(".tg");
    if (V.cstart[v + 1] === V.cstart[v]) return;
    var isOpen = div.dataset.open === "1";
    if (open === isOpen) return;
    if (isOpen) {
      var next = div.nextSibling;
      while (next && +next.dataset.depth > depth) { var x = next.nextSibling; next.remove(); next = x; }
      div.dataset.open = "0"; tg.textContent = "\u25b8";
      return;
    }
    var frag = document.createDocumentFragment(), shown = 0;
    for (var k = V.cstart[v]; k < V.cstart[v + 1]; k++) {
      if (shown++ === TREE_KIDS) {
        var more = document.createElement("div");
        more.className = "tn more"; more.dataset.depth = depth + 1;
        more.textContent = (V.cstart[v + 1] - k) + " more children, each under " + pct(V.incl[V.kids[k]], V.total);
        frag.appendChild(more);
        break;
      }
      frag.appendChild(treeRow(V.kids[k], depth + 1));
    }
    div.parentNode.insertBefore(frag, div.nextSibling);
    div.dataset.open = "1"; tg.textContent = "\u25be";
  }
  function drawTree() {
    var box = $("tree");
    box.innerHTML = "<div class='tn'><span class=v>" + state.metric + " total</span><span class=c>calls</span>function</div>";
    var root = treeRow(0, 0);
    box.appendChild(root);
    // Open the hot path a few levels deep.
    var div = root;
    for (var i = 0; i < 6 && div; i++) {
      expand(div, true);
      div = div.nextSibling;
      if (div && !div.dataset.node) div = null;
    }
  }
  $("tree").addEventListener("click", function (e) {
    var div = e.target.closest(".tn");
    if (div && div.dataset.node) expand(div, div.dataset.open !== "1");
  });

  // ---- function table ------------------------------------------------------------
  var FUNC_ROWS = 300;
  // function, calls, the shown metric's self and total, then one column per
  // further table metric of the catalogue that the profile has.
  var cols = [
    ["name", "function", function (r) { return labels[r.fn]; }],
    ["calls", "calls", function (r) { return r.calls; }],
    ["self", "self (tottime)", function (r) { return r.self; }],
    ["total", "total (cumtime)", function (r) { return r.total; }]
  ].concat(D.columns.map(function (c) {
    return [c.name, c.label, function (r) { return r.m[c.name]; }, c];
  }));
  var sortCol = "total", sortDesc = true;
  function drawFuncs() {
    var head = "<tr>" + cols.map(function (c) {
      return "<th data-col='" + c[0] + "' class='" + (c[0] === "name" ? "name" : "") + "'" +
        (c[3] ? " title='" + esc(c[3].doc) + "'" : "") + ">" + esc(c[1]) +
        (sortCol === c[0] ? (sortDesc ? " \u25be" : " \u25b4") : "") + "</th>";
    }).join("") + "<th class=name>where</th></tr>";
    $("funcs").tHead.innerHTML = head;
    var key = cols.filter(function (c) { return c[0] === sortCol; })[0][2];
    var list = V.funcs.slice();
    if (matchFrame) list = list.filter(function (r) { return matchFrame[r.fn]; });
    list.sort(function (a, b) {
      var x = key(a), y = key(b), d = x < y ? -1 : x > y ? 1 : 0;
      return (sortDesc ? -d : d) || a.fn - b.fn;
    });
    var html = [];
    for (var i = 0; i < list.length && i < FUNC_ROWS; i++) {
      var r = list[i];
      html.push("<tr data-fn='" + r.fn + "' class='" + (r.fn === state.focus ? "sel" : "") + "'><td class=name>" +
        esc(labels[r.fn]) + "</td><td>" + r.calls + (r.prim !== r.calls ? "/" + r.prim : "") +
        "</td><td>" + fmt(r.self, state.metric) + "</td><td>" + fmt(r.total, state.metric) + " " +
        pct(r.total, V.total) + "</td>" + D.columns.map(function (c) {
          return "<td>" + fmtUnit(r.m[c.name], c.unit) + "</td>";
        }).join("") + "<td class=name>" + esc(where(r.fn)) + "</td></tr>");
    }
    $("funcs").tBodies[0].innerHTML = html.join("");
    $("funcs-note").textContent = list.length + " functions" +
      (list.length > FUNC_ROWS ? ", first " + FUNC_ROWS + " shown" : "") + "; click a header to sort, a row for its callers and callees";
    drawFuncDetail();
  }
  function edgeTable(title, edges, end) {
    var list = edges.slice().sort(function (a, b) { return b.total - a.total; });
    return "<div><h3>" + title + "</h3><table><tr><th class=name>function</th><th>calls</th><th>total</th></tr>" +
      list.slice(0, 50).map(function (e) {
        return "<tr data-fn='" + e[end] + "'><td class=name>" + esc(labels[e[end]]) + "</td><td>" + e.calls +
          "</td><td>" + fmt(e.total, state.metric) + " " + pct(e.total, V.total) + "</td></tr>";
      }).join("") + "</table></div>";
  }
  function drawFuncDetail() {
    var r = V.funcIndex.get(state.focus), box = $("func-detail");
    if (!r) { box.innerHTML = ""; return; }
    box.innerHTML = edgeTable("callers of " + esc(labels[r.fn]), r.callers, "from") +
      edgeTable("callees of " + esc(labels[r.fn]), r.callees, "to");
  }
  $("funcs").addEventListener("click", function (e) {
    var th = e.target.closest("th");
    if (th && th.dataset.col) {
      if (sortCol === th.dataset.col) sortDesc = !sortDesc;
      else { sortCol = th.dataset.col; sortDesc = sortCol !== "name"; }
      drawFuncs();
      return;
    }
    var tr = e.target.closest("tr[data-fn]");
    if (tr) { state.focus = +tr.dataset.fn; drawFuncs(); }
  });
  $("func-detail").addEventListener("click", function (e) {
    var tr = e.target.closest("tr[data-fn]");
    if (tr) { state.focus = +tr.dataset.fn; drawFuncs(); }
  });

  // ---- call graph: callers -> function -> callees, share of time on edges --------
  function defaultFocus() {
    if (V.funcIndex.has(state.focus)) return state.focus;
    // The heaviest function that is not the whole program: the first below
    // the root with less than all of the time, else the heaviest.
    var list = V.funcs.slice().sort(function (a, b) { return b.total - a.total; });
    for (var i = 0; i < list.length; i++) if (list[i].total < V.total) return list[i].fn;
    return list.length ? list[0].fn : -1;
  }
  function drawGraph() {
    var fn = defaultFocus(), box = $("graph");
    state.focus = fn;
    if (fn < 0) { box.textContent = "no functions"; return; }
    var r = V.funcIndex.get(fn), GN = 12;
    var callers = r.callers.slice().sort(function (a, b) { return b.total - a.total; }).slice(0, GN);
    var callees = r.callees.slice().sort(function (a, b) { return b.total - a.total; }).slice(0, GN);
    var BW = 260, BH = 46, GAP = 14, W = 3 * BW + 2 * 170 + 40;
    var rows = Math.max(callers.length, callees.length, 1), H = rows * (BH + GAP) + 40;
    var svg = ["<svg xmlns='http://www.w3.org/2000/svg' width='" + W + "' height='" + H + "'>"];
    function boxSvg(f, x, y, main) {
      var row = V.funcIndex.get(f), selfShare = row && V.total ? row.self / V.total : 0;
      var shade = Math.round(255 - 200 * Math.min(selfShare * 2, 1));
      var name = labels[f].length > 34 ? labels[f].slice(0, 32) + ".." : labels[f];
      return "<g class='box' data-fn='" + f + "'><title>" + esc(labels[f] + "\n" + where(f)) + "</title>" +
        "<rect x='" + x + "' y='" + y + "' width='" + BW + "' height='" + BH + "' rx='6' fill='rgb(255," + shade + "," + shade +
        ")' stroke='" + (main ? "#000" : "#888") + "' stroke-width='" + (main ? 2 : 1) + "'/>" +
        "<text x='" + (x + 8) + "' y='" + (y + 18) + "'>" + esc(name) + "</text>" +
        "<text x='" + (x + 8) + "' y='" + (y + 35) + "' fill='#555'>total " + pct(row ? row.total : 0, V.total) +
        "  self " + pct(row ? row.self : 0, V.total) + "</text></g>";
    }
    function edgeSvg(x1, y1, x2, y2, e) {
      var mx = (x1 + x2) / 2;
      return "<path d='M" + x1 + "," + y1 + " C" + mx + "," + y1 + " " + mx + "," + y2 + " " + x2 + "," + y2 +
        "' fill='none' stroke='#777' stroke-width='" + (1 + 6 * (V.total ? e.total / V.total : 0)).toFixed(1) +
        "' marker-end='url(#arrow)'/><text x='" + (mx - 40) + "' y='" + ((y1 + y2) / 2 - 4) + "' class='edge'>" +
        pct(e.total, V.total) + " \u00b7 " + e.calls + " calls</text>";
    }
    svg.push("<defs><marker id='arrow' viewBox='0 0 10 10' refX='10' refY='5' markerWidth='7' markerHeight='7' orient='auto'>" +
      "<path d='M0,0 L10,5 L0,10 z' fill='#777'/></marker></defs>");
    var cx = BW + 170 + 20, cy = H / 2 - BH / 2;
    callers.forEach(function (e, i) {
      var y = 20 + i * (BH + GAP);
      svg.push(boxSvg(e.from, 20, y, false));
      svg.push(edgeSvg(20 + BW, y + BH / 2, cx, cy + BH / 2, e));
    });
    callees.forEach(function (e, i) {
      var y = 20 + i * (BH + GAP), x = cx + BW + 170;
      svg.push(boxSvg(e.to, x, y, false));
      svg.push(edgeSvg(cx + BW, cy + BH / 2, x, y + BH / 2, e));
    });
    svg.push(boxSvg(fn, cx, cy, true));
    svg.push("</svg>");
    box.innerHTML = svg.join("");
    // The hottest path from the root, as a breadcrumb.
    var path = [], v = 0;
    while (V.cstart[v + 1] > V.cstart[v] && path.length < 12) {
      v = V.kids[V.cstart[v]];
      path.push("<a href='#' data-fn='" + fFunc(V.frame[v]) + "'>" + esc(labels[V.frame[v]]) + "</a> " + pct(V.incl[v], V.total));
    }
    $("graph-path").innerHTML = "hot path: " + path.join(" \u2192 ");
  }
  function graphClick(e) {
    var g = e.target.closest("[data-fn]");
    if (!g) return;
    e.preventDefault();
    state.focus = +g.dataset.fn;
    drawGraph();
  }
  $("graph").addEventListener("click", graphClick);
  $("graph-path").addEventListener("click", graphClick);

  // ---- source with per-line heat -------------------------------------------------
  function lineFuncs() {
    var seen = new Map();
    for (var i = 1; i < V.n; i++) {
      var f = V.frame[i];
      if (fLineno(f)) {
        var fn = fFunc(f);
        seen.set(fn, (seen.get(fn) || 0) + V.self[state.metric][i]);
      }
    }
    return Array.from(seen.keys()).sort(function (a, b) { return seen.get(b) - seen.get(a); });
  }
  function drawSource() {
    var fns = lineFuncs(), sel = $("source-func"), box = $("source");
    if (!fns.length) {
      sel.innerHTML = "";
      box.innerHTML = "<p class=note>This profile has no line-level data: record it in line mode to see the time of each line.</p>";
      return;
    }
    var fn = fns.indexOf(state.focus) >= 0 ? state.focus : fns[0];
    sel.innerHTML = fns.map(function (f) {
      return "<option value='" + f + "'" + (f === fn ? " selected" : "") + ">" + esc(labels[f]) + "</option>";
    }).join("");
    var self = new Map(), incl = new Map(), hits = new Map(), max = 0;
    for (var i = 1; i < V.n; i++) {
      var f = V.frame[i];
      if (fLineno(f) && fFunc(f) === fn) {
        var ln = fLineno(f);
        self.set(ln, (self.get(ln) || 0) + V.self[state.metric][i]);
        incl.set(ln, (incl.get(ln) || 0) + V.incl[i]);
        hits.set(ln, (hits.get(ln) || 0) + (refines(i) ? V.hits[i] : V.calls[i]));
        if (incl.get(ln) > max) max = incl.get(ln);
      }
    }
    var src = D.sources[fFile(fn)], lines = Array.from(incl.keys()).sort(function (a, b) { return a - b; });
    var first = fLine(fn) || lines[0], last = lines[lines.length - 1];
    var html = ["<p class=note>" + esc(fFile(fn)) + (src ? "" : " (source file not found when the report was written)") +
      "</p><table class=src><tr><th>line</th><th>hits</th><th>self</th><th>total</th><th></th><th class=name>code</th></tr>"];
    for (var l = first; l <= last; l++) {
      var text = src && l - src[0] >= 0 && l - src[0] < src[1].length ? src[1][l - src[0]] : "";
      var v = incl.get(l) || 0;
      html.push("<tr><td class=n>" + l + "</td><td class=v>" + (hits.get(l) || "") + "</td><td class=v>" +
        (v ? fmt(self.get(l) || 0, state.metric) : "") + "</td><td class=v>" + (v ? fmt(v, state.metric) + " " + pct(v, V.total) : "") +
        "</td><td><span class=heat style='width:" + (max ? Math.round(80 * v / max) : 0) + "px'></span></td><td class=code>" +
        esc(text) + "</td></tr>");
    }
    html.push("</table>");
    box.innerHTML = html.join("");
  }
  $("source-func").addEventListener("change", function (e) { state.focus = +e.target.value; drawSource(); });

  // ---- overview: findings, then the route table -----------------------------------
  var SEV = { high: "sev-high", medium: "sev-medium", info: "sev-info" };
  function drawOverview() {
    var box = $("overview"), html = [];
    var wall = D.wall_ns, idle = D.idle_ns;
    html.push("<p class=note>" + fmtUnit(wall, "nanoseconds") + " recorded on all threads" +
      (idle ? "; " + fmtUnit(idle, "nanoseconds") + " of it (" + pct(idle, wall) +
        ") idle waiting, left out of the views" + (state.idle ? " (shown now)" : "") : "") +
      ". Percentages in the views are of the time shown.</p>");
    if (D.timeline) html.push("<p class=note>This profile has a timeline of its threads, requests" +
      (D.timeline.stalls.length ? " and " + D.timeline.stalls.length + " event-loop stall(s)" : "") +
      ": <a href='#' id=to-timeline>open the Timeline</a>.</p>");
    html.push("<h2>Findings</h2>");
    if (!D.findings.length) {
      html.push("<p class=note>No route, function or wait stands out in this profile.</p>");
    } else {
      html.push("<ol id=findings>");
      D.findings.forEach(function (f, i) {
        html.push("<li data-i='" + i + "'><span class='sev " + SEV[f.severity] + "'>" + esc(f.severity) +
          "</span> <b>" + esc(f.title) + "</b>: " + esc(f.message) +
          (f.path && f.path.length > 1 ? "<div class=path>" + f.path.map(esc).join(" \u2192 ") + "</div>" : "") +
          (f.route || f.function ? " <a href='#' class=ev>evidence</a>" : "") + "</li>");
      });
      html.push("</ol>");
    }
    if (D.sweep_html) {   // written by the C core from the profile's sweep (safe HTML)
      html.push("<h2>Load sweep</h2><p class=note>Latency against the throughput achieved at " +
        "each step of the sweep: the saturation point (the highest step sustained within the " +
        "objective) and the knee are marked; each step is a phase of this profile (the phase " +
        "menu of apiprof report --phase, and apiprof diff --phase-a/--phase-b).</p>" +
        "<div id=sweep>" + D.sweep_html + "</div>");
    }
    if (D.memory_html) {   // written by the C core from the profile's memory timeline (safe SVG)
      html.push("<h2>Memory over time</h2><p class=note>The process's resident set (RSS) and, " +
        "when allocations were recorded, the traced heap (bytes allocated while profiling and " +
        "still alive), sampled on an interval; phases are shaded and the step of largest growth " +
        "of each is marked.</p><div id=memtl>" + D.memory_html + "</div>");
    }
    if (D.unreleased && D.unreleased.length) {
      html.push("<h2>Unreleased objects</h2><p class=note>Python objects allocated while " +
        "profiling and still alive at its end, by type (most bytes first; an object's own " +
        "block, not the buffers it points to), with the lines that made the most of them.</p>" +
        "<table id=unreleased><tr><th class=name>type</th><th>objects</th><th>bytes</th>" +
        "<th class=name>made at (objects, route)</th></tr>");
      D.unreleased.slice(0, 20).forEach(function (t) {
        html.push("<tr><td class=name>" + esc(t.type) + "</td><td>" + t.count + "</td><td>" +
          fmtUnit(t.bytes, "bytes") + "</td><td class=name>" + t.sites.map(function (s) {
            return esc((s.function || "?") + " " + (s.file || "").split("/").pop() + ":" + s.line) +
              " (" + s.count + (s.route ? ", " + esc(s.route) : "") + ")";
          }).join("<br>") + "</td></tr>");
      });
      html.push("</table>");
    }
    if (D.routes.length) {
      var all = 0, anyCpu = false, anyLat = false;
      D.routes.forEach(function (r) {
        all += r.work_ns; anyCpu = anyCpu || r.cpu_ns > 0; anyLat = anyLat || !!r.latency;
      });
      var lat = function (r, k) { return r.latency ? fmtUnit(r.latency[k], "nanoseconds") : "-"; };
      html.push("<h2>Routes</h2><p class=note>work: time running on threads for the route " +
        "(waiting and idle left out); waiting: time awaiting calls outside the app. Click a route " +
        "for its own flame graph." + (anyLat ? " p50/p95/p99: request latency, from a request's " +
        "start to the end of its response." : "") + "</p><table id=routes><tr><th class=name>route</th>" +
        "<th>requests</th>" + (anyLat ? "<th>p50</th><th>p95</th><th>p99</th>" : "") + "<th>work</th><th>work / request</th><th>share of work</th>" + (anyCpu ? "<th>cpu</th>" : "") +
        "<th>waiting</th><th>waiting / request</th></tr>");
      D.routes.forEach(function (r) {
        var per = function (v) { return r.requests ? fmtUnit(v / r.requests, "nanoseconds") : "-"; };
        html.push("<tr data-route='" + esc(r.route) + "'><td class=name>" + esc(r.route) + "</td><td>" +
          r.requests + "</td>" + (anyLat ? "<td>" + lat(r, "p50_ns") + "</td><td>" + lat(r, "p95_ns") +
          "</td><td>" + lat(r, "p99_ns") + "</td>" : "") + "<td>" + fmtUnit(r.work_ns, "nanoseconds") + "</td><td>" + per(r.work_ns) +
          "</td><td>" + pct(r.work_ns, all) + "</td>" + (anyCpu ? "<td>" + fmtUnit(r.cpu_ns, "nanoseconds") +
          "</td>" : "") + "<td>" + fmtUnit(r.wait_ns, "nanoseconds") + "</td><td>" + per(r.wait_ns) +
          "</td></tr>");
      });
      html.push("</table>");
    }
    html.push(ioView());
    box.innerHTML = html.join("");
  }
  // The I/O view: per route, its time split into running code and each wait kind, and
  // its captured statements and outgoing calls (apiprof run --queries) with their share
  // of the route's time; an N+1 or a repeated call is marked.
  var IO_COLOR = { running: "#7aa6d8", database: "#d9822b", network: "#3aa37a", file: "#9b6fc4",
    sleep: "#b8b8b8", subprocess: "#c4a35a", lock: "#c0392b", gil: "#8e44ad", thread_pool: "#5d6d7e", idle: "#ddd" };
  function ioView() {
    var byRoute = {}, out = [];
    (D.queries || []).forEach(function (q) {
      if (q.route !== null) (byRoute[q.route] = byRoute[q.route] || []).push(q);
    });
    D.routes.forEach(function (r) {
      var waits = r.waits || {}, qs = byRoute[r.route] || [];
      var kinds = Object.keys(waits).filter(function (k) { return waits[k] > 0; });
      if (!kinds.length && !qs.length) return;
      var parts = [["running", r.running_ns || 0]].concat(kinds.map(function (k) { return [k, waits[k]]; }));
      var time = 0;
      parts.forEach(function (p) { time += p[1]; });
      out.push("<div class=io data-io-route='" + esc(r.route) + "'><h3>" + esc(r.route) + "</h3><div class=split>");
      parts.forEach(function (p) {
        if (p[1] > 0) out.push("<span class='io-" + esc(p[0]) + "' style='width:" + (100 * p[1] / time).toFixed(2) +
          "%;background:" + (IO_COLOR[p[0]] || "#999") + "' title='" + esc(p[0]) + " " + pct(p[1], time) + "'></span>");
      });
      out.push("</div><p class=note>" + parts.filter(function (p) { return p[1] > 0; }).map(function (p) {
        return "<span class=io-key style='background:" + (IO_COLOR[p[0]] || "#999") + "'></span>" + esc(p[0]) + " " +
          fmtUnit(r.requests ? p[1] / r.requests : p[1], "nanoseconds") + (r.requests ? "/request" : "") + " (" + pct(p[1], time) + ")";
      }).join(" &nbsp; ") + "</p>");
      if (qs.length) {
        qs.sort(function (a, b) { return b.total_ns - a.total_ns; });
        out.push("<table class=io-q><tr><th>kind</th><th class=name>statement or call</th><th>count</th><th>per request</th>" +
          "<th>total</th><th>share of route time</th><th class=name>line</th></tr>");
        qs.forEach(function (q) {
          var mark = q.n_plus_one ? " <span class='sev sev-high'>" + (q.kind === "http" ? "repeated" : "N+1") + "</span>" : "";
          out.push("<tr" + (q.n_plus_one ? " class=n1" : "") + "><td>" + esc(q.kind === "http" ? "call" : "query") +
            "</td><td class='name stmt'>" + esc(q.statement) + mark + "</td><td>" + q.count + "</td><td>" +
            (r.requests ? (q.count / r.requests).toFixed(q.count % r.requests ? 1 : 0) : "-") + "</td><td>" +
            fmtUnit(q.total_ns, "nanoseconds") + "</td><td>" + pct(q.total_ns, time) + "</td><td class=name>" +
            esc((q.function || "?") + " " + (q.file || "").split("/").pop() + ":" + q.line) + "</td></tr>");
        });
        out.push("</table>");
      }
      out.push("</div>");
    });
    if (!out.length) return "";
    return "<h2>I/O</h2><p class=note>Per route: its time split into running code and what it waited for " +
      "(docs/waits.md), and the database statements and outgoing HTTP calls it made (captured with " +
      "apiprof run --queries), with their share of the route's time; an N+1 query or a call repeated " +
      "in one request is marked.</p>" + out.join("");
  }
  // Select a route (or all with ""), as the route filter does.
  function selectRoute(route) {
    var sel = $("filter-route");
    if (!sel) return;
    sel.value = route || "";
    sel.dispatchEvent(new Event("change"));
  }
  $("overview").addEventListener("click", function (e) {
    if (e.target.id === "to-timeline") { e.preventDefault(); show("timeline"); return; }
    var tr = e.target.closest("tr[data-route]");
    if (tr) { selectRoute(tr.dataset.route); show("flame"); return; }
    var li = e.target.closest("li[data-i]");
    if (li && e.target.classList.contains("ev")) {
      e.preventDefault();
      var f = D.findings[+li.dataset.i];
      selectRoute(f.route);
      var fn = -1;
      for (var k = 1; k < NF && f.function; k++)
        if (fLineno(k) === 0 && fQual(k) === f.function && (!f.file || fFile(k) === f.file)) { fn = k; break; }
      if (fn >= 0) { state.focus = fn; applySearch("^" + f.function.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "$"); }
      show(fn >= 0 ? "tree" : "flame");
    }
  });

  // ---- timeline: the event ring's spans per thread, requests and stalls ------------------
  // Written by the C core (ap_timeline.c): per span its start (ns from the first span or
  // stall), duration, frame, lane (a thread), depth (nesting within the lane), wait kind
  // (an index into T.kinds, "running" when it ran) and, on a request's outermost span, its
  // route (a string id). Every name from the profile goes in as text, never as markup.
  var T = D.timeline, TL = null, SVGNS = "http://www.w3.org/2000/svg";
  var STALL_COLOR = "#e4007c", TL_GUT = 190, TL_AXIS = 24, TL_ROW = 16, TL_DEPTH = 12, TL_DEPTH_MAX = 80;
  function tlWhere(f) {
    var file = fFile(f);
    return file === "~" || !file ? "" : file + ":" + (fLineno(f) || fLine(f));
  }
  function tlBase(file) { return file.split("/").pop(); }
  function ms(ns) { return ns / 1e6 >= 100 ? (ns / 1e6).toFixed(0) + " ms" : (ns / 1e6).toPrecision(3) + " ms"; }
  function tlKindName(k) { return T.kinds[k]; }
  function tlColor(k) { return IO_COLOR[T.kinds[k]] || "#999"; }
  // Running frames of the call stacks in shades of the running colour, one per name.
  function runColor(s) {
    var h = 2166136261;
    for (var i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619) >>> 0;
    return "hsl(" + (195 + h % 35) + "," + (35 + (h >>> 8) % 30) + "%," + (66 + (h >>> 16) % 16) + "%)";
  }
  // Routes in light yellows to cyans: apart from the lock's red and the stalls' magenta.
  function routeColor(s) {
    var h = 2166136261;
    for (var i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619) >>> 0;
    return "hsl(" + (45 + h % 140) + ",55%," + (62 + (h >>> 8) % 12) + "%)";
  }
  function svgEl(tag, attrs, parent) {
    var el = document.createElementNS(SVGNS, tag);
    for (var a in attrs) el.setAttribute(a, attrs[a]);
    if (parent) parent.appendChild(el);
    return el;
  }
  function tlInit() {
    var n = T.s.length, lanes = T.lanes.map(function (l) {
      return { name: l.name, id: l.id, spans: [], byDepth: null, maxDepth: 0, requests: 0, loop: false };
    });
    var end = 0;
    for (var i = 0; i < n; i++) {
      var lane = lanes[T.l[i]];
      lane.spans.push(i);
      if (T.z[i] > lane.maxDepth) lane.maxDepth = T.z[i];
      if (T.r[i]) lane.requests++;
      if (T.s[i] + T.d[i] > end) end = T.s[i] + T.d[i];
    }
    T.stalls.forEach(function (st) { if (st.s + st.d > end) end = st.s + st.d; });
    // The loop's lane: the first thread named as the stalls' thread is.
    T.stalls.forEach(function (st) {
      for (var j = 0; j < lanes.length; j++) if (lanes[j].name === S[st.thread]) { lanes[j].loop = true; break; }
    });
    // Threads of the same name are numbered (a pool's workers).
    var seen = {};
    lanes.forEach(function (l) { seen[l.name] = (seen[l.name] || 0) + 1; });
    var num = {};
    lanes.forEach(function (l) {
      l.title = l.name + (seen[l.name] > 1 ? " " + (num[l.name] = (num[l.name] || 0) + 1) : "") +
        (l.loop ? " (event loop)" : "");
      // The activity row draws deeper spans over their parents.
      l.byDepth = l.spans.slice().sort(function (a, b) { return T.z[a] - T.z[b] || a - b; });
    });
    TL = { lanes: lanes, end: Math.max(end, 1), v0: 0, v1: Math.max(end, 1), stacks: false, sel: -1, hit: [] };
  }
  function tlNote() {
    var bits = [];
    bits.push("Each lane is a thread, time runs left to right (ms from the first span). The activity " +
      "row shows what the thread was doing: running code, or waiting (by kind). The requests row shows " +
      "the steps each request ran on that thread, by route (between its steps a request was awaiting). " +
      "An event-loop stall is one step of the loop that ran so long that no other request on that loop " +
      "could run: click one for the line that took the time. Hover for names, drag to pan, wheel to zoom.");
    if (T.shown < T.spans) bits.push("Showing the " + T.shown.toLocaleString("en") + " longest of " +
      T.spans.toLocaleString("en") + " spans: those shorter than " + fmtShort(T.cut_ns, "ns") + " are left out.");
    if (T.dropped) bits.push("The ring kept only the last spans of the run: " + T.dropped.toLocaleString("en") +
      " earlier ones were overwritten (apiprof run --timeline-events N keeps more), so the run " +
      "before " + ms(T.whole_from) + " is veiled: only the spans still open then are left.");
    return bits.join(" ");
  }
  function tlLegend() {
    var box = $("tl-legend"), present = {};
    for (var i = 0; i < T.k.length; i++) present[T.k[i]] = 1;
    box.textContent = "";
    function key(color, text) {
      var k = document.createElement("span");
      k.className = "key"; k.style.background = color;
      box.append(k, text);
    }
    // running first, then the wait kinds present, then requests and stalls
    var order = [T.kinds.length - 1];
    for (var k = 0; k < T.kinds.length - 1; k++) order.push(k);
    order.forEach(function (k) {
      if (!present[k]) return;
      var name = tlKindName(k);
      key(tlColor(k), name === "running" ? "running code" : name === "idle" ? "idle (nothing to do)" :
        "waiting: " + name.replace("_", " "));
      box.lastChild.previousSibling.dataset.kind = name;
    });
    key("repeating-linear-gradient(90deg,#9ab,#9ab 6px,#cde 6px,#cde 12px)", "request (its route's colour)");
    if (T.stalls.length) key(STALL_COLOR, "event-loop stall");
  }
  function tlTicks(g, W, H) {
    var span = TL.v1 - TL.v0, raw = span / 8, p10 = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (m) { return m * p10; }).filter(function (s) { return s >= raw; })[0];
    var dec = Math.max(0, -Math.floor(Math.log10(step / 1e6)));
    for (var t = Math.ceil(TL.v0 / step) * step; t <= TL.v1; t += step) {
      var x = tlX(t, W);
      svgEl("line", { x1: x, x2: x, y1: TL_AXIS - 6, y2: H, stroke: "#eee" }, g);
      svgEl("text", { x: x + 2, y: TL_AXIS - 10 }, g).textContent = (t / 1e6).toFixed(dec) + " ms";
    }
  }
  function tlX(t, W) { return TL_GUT + (t - TL.v0) * (W - TL_GUT - 8) / (TL.v1 - TL.v0); }
  function tlText(g, x, y, text, cls) {
    var el = svgEl("text", { x: x, y: y }, g);
    if (cls) el.setAttribute("class", cls);
    el.textContent = text;
    return el;
  }
  // A rectangle for [t0, t0 + d) on a row, clipped to the view; null when off screen or
  // narrower than minW pixels.
  function tlRect(g, t0, d, y, h, W, minW) {
    if (t0 > TL.v1 || t0 + d < TL.v0) return null;
    var x0 = Math.max(tlX(t0, W), TL_GUT), x1 = Math.min(tlX(t0 + d, W), W - 8);
    if (x1 - x0 < minW) {
      if (minW < 2) return null;
      x1 = x0 + minW;   // stalls stay clickable however far out the view is
    }
    return svgEl("rect", { x: x0.toFixed(2), y: y, width: (x1 - x0).toFixed(2), height: h }, g);
  }
  function drawTimeline() {
    var note = $("tl-note");
    if (!T) {
      note.textContent = "This profile has no timeline: record one with apiprof run --timeline " +
        "(or Profiler(timeline=N)) to see threads, requests and event-loop stalls over time.";
      $("tl-main").hidden = true;
      return;
    }
    if (!TL) { tlInit(); tlLegend(); note.textContent = tlNote(); }
    var svg = $("tl-svg"), W = Math.max($("tl-box").clientWidth - 2, 600), g = document.createDocumentFragment();
    svg.textContent = "";
    var y = TL_AXIS, rows = [], lanesY;   // [y, height, label, class] for the gutter
    if (T.stalls.length) {
      rows.push([y, TL_ROW, "event-loop stalls", "track"]);
      T.stalls.forEach(function (st, i) {
        var r = tlRect(g, st.s, st.d, y + 1, TL_ROW - 2, W, 3);
        if (!r) return;
        r.setAttribute("fill", STALL_COLOR);
        r.setAttribute("class", "tl-stall" + (i === TL.sel ? " sel" : ""));
        r.setAttribute("data-stall", i);
      });
      y += TL_ROW + 8;
    }
    lanesY = y;
    TL.lanes.forEach(function (lane, li) {
      rows.push([y, 14, lane.title, "lane"]);
      y += 15;
      if (lane.requests) {
        rows.push([y, TL_ROW, "requests", "row"]);
        lane.spans.forEach(function (i) {
          if (!T.r[i]) return;
          var r = tlRect(g, T.s[i], T.d[i], y + 1, TL_ROW - 2, W, 0.5);
          if (!r) return;
          r.setAttribute("fill", routeColor(S[T.r[i]]));
          r.setAttribute("class", "tl-req");
          r.setAttribute("data-i", i);
          var w = +r.getAttribute("width");
          if (w > 50) tlText(g, +r.getAttribute("x") + 3, y + TL_ROW - 4, S[T.r[i]].slice(0, Math.floor(w / 6.5)), "in");
        });
        y += TL_ROW;
      }
      rows.push([y, TL_ROW, "activity", "row"]);
      lane.byDepth.forEach(function (i) {
        var r = tlRect(g, T.s[i], T.d[i], y + 1, TL_ROW - 2, W, 0.5);
        if (!r) return;
        r.setAttribute("fill", tlColor(T.k[i]));
        r.setAttribute("class", "tl-span");
        r.setAttribute("data-i", i);
        r.setAttribute("data-kind", tlKindName(T.k[i]));
      });
      y += TL_ROW;
      if (TL.stacks) {
        var deepest = -1;
        lane.spans.forEach(function (i) {
          if (T.z[i] >= TL_DEPTH_MAX) return;
          var r = tlRect(g, T.s[i], T.d[i], y + T.z[i] * TL_DEPTH, TL_DEPTH - 1, W, 0.5);
          if (!r) return;
          if (T.z[i] > deepest) deepest = T.z[i];
          var k = T.k[i];
          r.setAttribute("fill", T.kinds[k] === "running" ? runColor(labels[T.f[i]]) : tlColor(k));
          r.setAttribute("class", "tl-span");
          r.setAttribute("data-i", i);
          r.setAttribute("data-kind", tlKindName(k));
          var w = +r.getAttribute("width");
          if (w > 40) tlText(g, +r.getAttribute("x") + 2, y + T.z[i] * TL_DEPTH + 9,
            labels[T.f[i]].slice(0, Math.floor(w / 6)), "in");
        });
        if (deepest >= 0) rows.push([y, TL_DEPTH, "call stacks", "row"]);
        y += (deepest + 1) * TL_DEPTH;
      }
      y += 8;
      if (li < TL.lanes.length - 1) svgEl("line", { x1: 0, x2: W, y1: y - 4, y2: y - 4, stroke: "#ddd" }, g);
    });
    var H = y + 4;
    svg.setAttribute("width", W);
    svg.setAttribute("height", H);
    var axis = svgEl("g", {}, svg);
    tlTicks(axis, W, H);
    svg.appendChild(g);
    if (T.whole_from > TL.v0) {   // the ring lost the spans that closed before this: veiled
      var x0 = tlX(TL.v0, W), x1 = tlX(Math.min(T.whole_from, TL.v1), W);
      // over the threads only: the stalls are kept apart from the ring, all of them
      svgEl("rect", { x: x0, y: lanesY, width: Math.max(x1 - x0, 0), height: H - lanesY,
        fill: "#fff", "fill-opacity": 0.75, "class": "tl-lost" }, svg);
      if (x1 - x0 > 200) tlText(svg, x0 + 6, lanesY + 12, "incomplete: earlier spans overwritten", "lost");
    }
    var gut = svgEl("g", {}, svg);
    svgEl("rect", { x: 0, y: 0, width: TL_GUT - 4, height: H, fill: "#fff" }, gut);
    rows.forEach(function (r) {
      var row = r[3] === "row", t = tlText(gut, row ? 16 : 4, r[0] + (row ? 11 : 12), r[2], r[3]);
      if (r[2].length > 28) {   // cut to the gutter; the whole name in its tooltip
        t.textContent = r[2].slice(0, 27) + "\u2026";
        svgEl("title", {}, t).textContent = r[2];
      }
    });
    $("tl-range").textContent = "showing " + ms(TL.v0) + " to " + ms(TL.v1) + " of " + ms(TL.end);
  }
  function tlSpanText(i) {
    var f = T.f[i], k = tlKindName(T.k[i]), w = tlWhere(f);
    return labels[f] + (w ? "\n" + w : "") + "\n" + fmtShort(T.d[i], "ns") + " from " + ms(T.s[i]) + "\n" +
      (k === "running" ? "running" : k === "idle" ? "idle: nothing to do" : "waiting: " + k) +
      (T.r[i] ? "\nrequest step of " + S[T.r[i]] : "");
  }
  function tlStallText(st) {
    return "event-loop stall: " + fmtShort(st.d, "ns") + " from " + ms(st.s) + "\n" + fQual(st.f) + " (" +
      tlBase(fFile(st.f)) + ":" + st.line + ")" + (S[st.route] ? "\nroute " + S[st.route] : "") +
      "\nclick for its call path";
  }
  // The panel of stall i: what it was, what waited, and its call path with the culprit's line.
  function tlShowStall(i) {
    var st = T.stalls[i], box = $("tl-stall");
    TL.sel = i;
    box.textContent = "";
    var h = document.createElement("h3");
    h.textContent = "Event-loop stall: " + fmtShort(st.d, "ns") + " at " + ms(st.s) +
      (S[st.route] ? " in a request of " + S[st.route] : "") + (S[st.task] ? " (task " + S[st.task] + ")" : "");
    var p = document.createElement("p");
    p.textContent = "For these " + fmtShort(st.d, "ns") + " the event loop" + (S[st.thread] ? " (thread " +
      S[st.thread] + ")" : "") + " ran only this step: every other request on the loop waited for it. " +
      "The time went to line " + st.line + " of " + fFile(st.f) + ", in " + fQual(st.f) + "." +
      (st.cpu && st.cpu < st.d / 2 ? " The loop's thread was on the CPU for " + fmtShort(st.cpu, "ns") +
        " of it: it waited in a blocking call, not computing." : "");
    box.append(h, p);
    var src = D.sources[fFile(st.f)];
    if (src && st.line >= src[0] && st.line - src[0] < src[1].length) {   // the line itself
      var pre = document.createElement("pre");
      pre.className = "tl-line";
      pre.textContent = st.line + "  " + src[1][st.line - src[0]];
      box.appendChild(pre);
    }
    // Requests whose steps ran on the loop in the 5 ms after the stall: they were waiting.
    var after = {}, end = st.s + st.d;
    for (var j = 0; j < T.s.length; j++) {
      if (T.r[j] && T.s[j] >= end && T.s[j] < end + 5e6 && TL.lanes[T.l[j]].loop) {
        var r = S[T.r[j]];
        after[r] = (after[r] || 0) + 1;
      }
    }
    var names = Object.keys(after);
    if (names.length) {
      var q = document.createElement("p");
      q.textContent = "Request steps that ran on the loop within 5 ms after it ended (they had been waiting): " +
        names.map(function (r) { return r + (after[r] > 1 ? " \u00d7" + after[r] : ""); }).join(", ") + ".";
      box.appendChild(q);
    }
    var zoom = document.createElement("button");
    zoom.textContent = "zoom to this stall";
    zoom.addEventListener("click", function () {
      TL.v0 = Math.max(0, st.s - st.d); TL.v1 = Math.min(TL.end, st.s + 2 * st.d); drawTimeline();
    });
    box.appendChild(zoom);
    var sub = document.createElement("h3");
    sub.textContent = "Call path (outermost first; the line that took the time is marked)";
    var ol = document.createElement("ol");
    var culprit = -1;
    st.stack.forEach(function (f, k) { if (fFunc(f) === fFunc(st.f)) culprit = k; });
    st.stack.forEach(function (f, k) {
      var li = document.createElement("li"), where = document.createElement("span");
      var lib = /\/(site|dist)-packages\//.test(fFile(f));
      li.textContent = labels[f] + " ";
      where.className = "where";
      // library files from their package on, so that the app's own lines stand out
      where.textContent = (k === culprit ? fFile(f) + ":" + st.line + "  \u2190 the time went here" :
        tlWhere(f)).replace(/^.*\/(site|dist)-packages\//, "");
      li.appendChild(where);
      li.className = k === culprit ? "culprit" : lib ? "lib" : "";
      ol.appendChild(li);
    });
    box.append(sub, ol);
    drawTimeline();
    if (box.scrollIntoView) box.scrollIntoView({ block: "nearest" });
  }
  // Zoom by factor around time t (ns), within the run.
  function tlZoom(factor, t) {
    var span = Math.min(Math.max((TL.v1 - TL.v0) * factor, 1e3), TL.end);
    var a = (t - TL.v0) / (TL.v1 - TL.v0);
    TL.v0 = Math.max(0, t - a * span);
    TL.v1 = TL.v0 + span;
    if (TL.v1 > TL.end) { TL.v1 = TL.end; TL.v0 = Math.max(0, TL.end - span); }
    drawTimeline();
  }
  function tlTime(e) {
    var r = $("tl-svg").getBoundingClientRect(), W = r.width;
    return TL.v0 + (e.clientX - r.left - TL_GUT) * (TL.v1 - TL.v0) / (W - TL_GUT - 8);
  }
  var tlDrag = null;
  $("tl-svg").addEventListener("wheel", function (e) {
    if (!TL) return;
    e.preventDefault();
    tlZoom(e.deltaY > 0 ? 1.25 : 0.8, tlTime(e));
  }, { passive: false });
  $("tl-svg").addEventListener("mousedown", function (e) {
    if (TL) tlDrag = { x: e.clientX, v0: TL.v0, v1: TL.v1, moved: false };
  });
  window.addEventListener("mousemove", function (e) {
    if (!tlDrag) return;
    var dx = e.clientX - tlDrag.x;
    if (Math.abs(dx) < 3 && !tlDrag.moved) return;
    tlDrag.moved = true;
    $("tl-box").classList.add("drag");
    var W = $("tl-svg").getBoundingClientRect().width, dt = dx * (tlDrag.v1 - tlDrag.v0) / (W - TL_GUT - 8);
    var span = tlDrag.v1 - tlDrag.v0;
    TL.v0 = Math.min(Math.max(0, tlDrag.v0 - dt), TL.end - span);
    TL.v1 = TL.v0 + span;
    drawTimeline();
  });
  window.addEventListener("mouseup", function (e) {
    if (!tlDrag) return;
    var moved = tlDrag.moved;
    tlDrag = null;
    $("tl-box").classList.remove("drag");
    if (moved) return;
    var st = e.target.closest && e.target.closest(".tl-stall");
    if (st) tlShowStall(+st.getAttribute("data-stall"));
  });
  $("tl-svg").addEventListener("mousemove", function (e) {
    if (tlDrag && tlDrag.moved) return;
    var t = e.target;
    if (t.hasAttribute("data-stall")) showTip(e, tlStallText(T.stalls[+t.getAttribute("data-stall")]));
    else if (t.hasAttribute("data-i")) showTip(e, tlSpanText(+t.getAttribute("data-i")));
    else showTip(e, null);
  });
  $("tl-svg").addEventListener("mouseleave", function (e) { showTip(e, null); });
  $("tl-in").addEventListener("click", function () { tlZoom(0.5, (TL.v0 + TL.v1) / 2); });
  $("tl-out").addEventListener("click", function () { tlZoom(2, (TL.v0 + TL.v1) / 2); });
  $("tl-reset").addEventListener("click", function () { TL.v0 = 0; TL.v1 = TL.end; drawTimeline(); });
  $("tl-stacks").addEventListener("change", function (e) { TL.stacks = e.target.checked; drawTimeline(); });

  // ---- the view state in the URL: a link opens the same view ------------------------
  function saveHash() {
    var q = ["view=" + encodeURIComponent(state.view)];
    if (state.filters.route) q.push("route=" + encodeURIComponent(state.filters.route));
    if (state.search) q.push("search=" + encodeURIComponent(state.search));
    if (state.metric !== D.metric) q.push("metric=" + encodeURIComponent(state.metric));
    if (state.idle) q.push("idle=1");
    if (!state.fold) q.push("fold=0");
    try { history.replaceState(null, "", "#" + q.join("&")); } catch (e) { /* file: URLs in some browsers */ }
  }
  function readHash() {
    var out = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var i = kv.indexOf("=");
      if (i > 0) out[decodeURIComponent(kv.slice(0, i))] = decodeURIComponent(kv.slice(i + 1));
    });
    return out;
  }

  // ---- controls and tabs ----------------------------------------------------------
  function redraw() {
    var v = state.view;
    saveHash();
    if (v === "overview") drawOverview();
    else if (v === "flame") drawFlame();
    else if (v === "tree") drawTree();
    else if (v === "funcs") drawFuncs();
    else if (v === "graph") drawGraph();
    else if (v === "source") drawSource();
    else if (v === "timeline") drawTimeline();
  }
  function show(view) {
    state.view = view;
    Array.prototype.forEach.call(document.querySelectorAll("#tabs button"), function (b) {
      b.classList.toggle("on", b.dataset.view === view);
    });
    Array.prototype.forEach.call(document.querySelectorAll(".view"), function (s) {
      s.classList.toggle("on", s.id === "view-" + view);
    });
    redraw();
  }
  $("tabs").addEventListener("click", function (e) { if (e.target.dataset.view) show(e.target.dataset.view); });
  var searchTimer = 0;
  $("search").addEventListener("input", function (e) {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(function () { applySearch(e.target.value); }, 150);
  });
  var msel = $("metric");
  msel.innerHTML = D.metrics.map(function (m) {
    return "<option" + (m === state.metric ? " selected" : "") + ">" + m + "</option>";
  }).join("");
  msel.addEventListener("change", function (e) {
    state.metric = e.target.value; computeMetric(); applySearch(state.search);
  });
  ["route", "thread", "task"].forEach(function (k) {
    var vals = [];
    trees.forEach(function (t) { if (t.labels[k] !== undefined && vals.indexOf(t.labels[k]) < 0) vals.push(t.labels[k]); });
    if (!vals.length) return;
    vals.sort();
    var label = document.createElement("label"), sel = document.createElement("select");
    sel.id = "filter-" + k;
    sel.innerHTML = "<option value=''>(all)</option>" + vals.map(function (v) {
      return "<option>" + esc(v) + "</option>";
    }).join("");
    sel.addEventListener("change", function () {
      state.filters[k] = sel.value;
      state.zoom = 0;
      if (!selectedTrees().length) { $("matched").textContent = "no data for this filter combination"; }
      buildView(); applySearch(state.search);
    });
    label.append(k + " ", sel);
    $("filters").appendChild(label);
  });
  window.addEventListener("resize", function () {
    if (state.view === "flame") drawFlame();
    else if (state.view === "timeline") drawTimeline();
  });
  $("show-idle").addEventListener("change", function (e) {
    state.idle = e.target.checked; state.zoom = 0; buildView(); applySearch(state.search);
  });
  $("fold-lib").addEventListener("change", function (e) {
    state.fold = e.target.checked; state.zoom = 0; buildView(); applySearch(state.search);
  });

  // The metadata for the header: Unix epochs in ns (started, stopped) as UTC date and
  // time with the run's duration, other *_ns values as durations, *_bytes as sizes, the rest
  // as they are.
  function metaText(meta) {
    var bits = [];
    function ns(k) { return /^[0-9]+$/.test(meta[k] || "") ? Number(meta[k]) : null; }
    function when(k) {
      return new Date(ns(k) / 1e6).toISOString().replace("T", " ").replace(/\.[0-9]+Z$/, " UTC");
    }
    for (var k in meta) {
      if (k === "argv" || meta[k] === "") continue;   // an empty value says nothing
      if (k.indexOf("sweep_") === 0) continue;          // the sweep has its own section
      var epoch = (k === "started" || k === "stopped") && ns(k) !== null;
      bits.push(k + ": " + (epoch ? when(k) : /_ns$/.test(k) && ns(k) !== null
                            ? fmt(ns(k), "wall") : /_bytes$/.test(k) && ns(k) !== null
                            ? fmtShort(ns(k), "B") : meta[k]));
    }
    if (ns("started") !== null && ns("stopped") !== null && ns("stopped") >= ns("started"))
      bits.push("duration: " + fmt(ns("stopped") - ns("started"), "wall"));
    if (meta.clock === "cpu")
      bits.push("note: cpu is the CPU time of each Python thread; native threads of C " +
                "extensions are only in process_cpu_ns");
    return bits;
  }

  $("title").textContent = D.title;
  document.title = D.title + " - apiprof";
  var metaBits = metaText(D.meta);
  // A link's view: #view=flame&route=GET%20/items&search=... (see saveHash).
  var h = readHash();
  if (h.idle === "1") { state.idle = true; $("show-idle").checked = true; }
  if (h.fold === "0") { state.fold = false; $("fold-lib").checked = false; }
  if (h.metric && D.metrics.indexOf(h.metric) >= 0) { state.metric = h.metric; msel.value = h.metric; }
  if (h.route && $("filter-route")) { $("filter-route").value = h.route; state.filters.route = $("filter-route").value; }
  buildView();
  $("summary").textContent = D.trees.length + " tree(s), " + V.n + " nodes, " + V.funcs.length + " functions; " +
    state.metric + " total " + fmt(V.total, state.metric) + (metaBits.length ? "; " + metaBits.join(", ") : "");
  drawFlame();
  if (h.search) { $("search").value = h.search; applySearch(h.search); }
  show(["overview", "timeline", "flame", "tree", "funcs", "graph", "source"].indexOf(h.view) >= 0 ? h.view : "overview");

  // ---- hooks for tests and benchmarks ---------------------------------------------
  window.apiprof = {
    state: state,
    view: function () { return V; },
    show: show,
    search: applySearch,
    // Canvas position (CSS px, relative to the viewport) of the centre of the
    // widest drawn frame whose label is `label`, or null.
    rectOf: function (label) {
      var best = null, r = canvas.getBoundingClientRect(), H = state.levels * ROW;
      rowsHit.forEach(function (row, d) {
        row.forEach(function (h) {
          if (labels[V.frame[h[2]]] === label && (!best || h[1] > best[1])) {
            var y = state.icicle ? d * ROW : H - (d + 1) * ROW;
            best = [h[0], h[1], r.left + h[0] + h[1] / 2, r.top + y + ROW / 2, h[2]];
          }
        });
      });
      return best && { x: best[2], y: best[3], width: best[1], node: best[4] };
    },
    // The timeline as drawn: its lanes' titles and the view's range in ns.
    timeline: function () {
      return TL && { lanes: TL.lanes.map(function (l) { return l.title; }), v0: TL.v0, v1: TL.v1, end: TL.end };
    },
    // The route of span i when it is a request's outermost span, and its lane's title.
    timelineRoute: function (i) { return T.r[i] ? S[T.r[i]] : null; },
    timelineLane: function (i) { return TL.lanes[T.l[i]].title; },
    functions: function () {
      return V.funcs.map(function (r) {
        return { name: fQual(r.fn), file: fFile(r.fn), line: fLine(r.fn), calls: r.calls, prim: r.prim,
          self: r.self, total: r.total, await: r.await, callers: r.callers.length, callees: r.callees.length };
      });
    }
  };
  document.body.setAttribute("data-ready", "1");
  window.apiprofReadyMs = performance.now();
})();
