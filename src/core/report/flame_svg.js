// flame_svg.js -- interaction of apiprof's standalone SVG flame graph: hover details, click to zoom, search.
"use strict";
(function () {
  var PAD = 10, frames = [], details, matched, unzoom, width, searchRe = null, zoomed = null;
  function frameOf(el) {
    while (el && el !== document) {
      if (el.classList && el.classList.contains("f")) return el;
      el = el.parentNode;
    }
    return null;
  }
  function fit(f) {
    var room = (f.w - 6) / 6.6, s = f.label;
    if (room < 3) s = "";
    else if (s.length > room) s = s.slice(0, Math.floor(room) - 2) + "..";
    f.text.textContent = s;
  }
  function place(f, x, w) {
    f.w = w;
    f.rect.setAttribute("x", x.toFixed(2));
    f.rect.setAttribute("width", w.toFixed(2));
    f.text.setAttribute("x", (x + 3).toFixed(2));
    fit(f);
  }
  function zoom(target) {
    zoomed = target;
    unzoom.classList.toggle("hide", target === null);
    var x0 = target ? target.x : PAD, w0 = target ? target.w0 : width - 2 * PAD;
    var k = (width - 2 * PAD) / w0, eps = 1e-6;
    frames.forEach(function (f) {
      var inside = f.x + f.w0 > x0 + eps && f.x < x0 + w0 - eps;
      f.g.classList.remove("hide", "dim");
      if (!target) { place(f, f.x, f.w0); return; }
      if (!inside) { f.g.classList.add("hide"); return; }
      if (f.y > target.y) { f.g.classList.add("dim"); place(f, PAD, width - 2 * PAD); return; }
      place(f, PAD + (f.x - x0) * k, f.w0 * k);
    });
  }
  function search(text) {
    searchRe = null;
    if (text) {
      try { searchRe = new RegExp(text); } catch (e) { searchRe = null; }
    }
    var spans = [];
    frames.forEach(function (f) {
      var hit = searchRe !== null && searchRe.test(f.label);
      f.rect.setAttribute("fill", hit ? "rgb(230,0,230)" : f.fill);
      if (hit) spans.push([f.x, f.x + f.w0]);
    });
    spans.sort(function (a, b) { return a[0] - b[0]; });
    var sum = 0, end = -1;
    spans.forEach(function (s) {
      if (s[0] >= end) { sum += s[1] - s[0]; end = s[1]; }
      else if (s[1] > end) { sum += s[1] - end; end = s[1]; }
    });
    matched.textContent = searchRe ? "Matched: " + (100 * sum / (width - 2 * PAD)).toFixed(1) + "%" : " ";
    document.querySelector("svg").setAttribute("data-matches", String(spans.length));
  }
  function init() {
    var svg = document.querySelector("svg");   // the document, or inline in a page
    width = +svg.getAttribute("width");
    details = document.getElementById("details");
    matched = document.getElementById("matched");
    unzoom = document.getElementById("unzoom");
    var gs = document.getElementById("frames").children;
    for (var i = 0; i < gs.length; i++) {
      var g = gs[i], r = g.querySelector("rect"), t = g.querySelector("title").textContent;
      frames.push({ g: g, rect: r, text: g.querySelector("text"), fill: r.getAttribute("fill"),
        x: +r.getAttribute("x"), w0: +r.getAttribute("width"), w: +r.getAttribute("width"),
        y: +r.getAttribute("y"), title: t, label: t.slice(0, t.lastIndexOf(" (")) });
      g.__f = frames[frames.length - 1];
    }
    svg.addEventListener("mouseover", function (e) {
      var g = frameOf(e.target);
      details.textContent = g ? g.__f.title : " ";
    });
    svg.addEventListener("click", function (e) {
      var g = frameOf(e.target);
      if (g) zoom(g.__f);
    });
    unzoom.addEventListener("click", function () { zoom(null); });
    document.getElementById("search").addEventListener("click", function () {
      search(window.prompt("Search frames (regular expression)", searchRe ? searchRe.source : "") || "");
    });
    window.addEventListener("keydown", function (e) {
      if (e.key === "f" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        search(window.prompt("Search frames (regular expression)", "") || "");
      } else if (e.key === "Escape") { zoom(null); search(""); }
    });
    var q = /[?&]s=([^&]*)/.exec(window.location.search);
    if (q) search(decodeURIComponent(q[1]));
    window.apiprofFlame = { zoom: function (i) { zoom(i === null ? null : frames[i]); },
      search: search, frames: frames, zoomed: function () { return zoomed; } };
  }
  window.addEventListener("load", init);
})();
