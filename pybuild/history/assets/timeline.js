// pybuild build timeline: a Gantt chart of one build record. Self-contained: the data
// is the JSON in #pybuild-data; nothing is fetched. Rows are virtualised (only those in
// view are in the DOM), so a build of thousands of steps stays light.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("pybuild-data").textContent);
  var root = document.getElementById("timeline");
  var PALETTE = ["#7aa2ff", "#3ddc97", "#ffc94d", "#c77dff", "#4cc9f0", "#ff8fab",
                 "#94d82d", "#ffa94d", "#63e6be", "#e599f7"];
  var ROW = 24, LABEL = 420, OVERSCAN = 12;
  var state = { pps: 0, filter: "", hideCached: false, criticalOnly: false,
                collapsed: {}, selected: null, rows: [] };
  var byNumber = {};
  data.bars.forEach(function (b) { byNumber[b.n] = b; });

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function fmt(s) {
    if (s < 0.001) return "0s";
    if (s < 1) return Math.round(s * 1000) + "ms";
    if (s < 60) return s.toFixed(1) + "s";
    var m = Math.floor(s / 60), r = Math.floor(s % 60);
    return m + "m " + (r < 10 ? "0" : "") + r + "s";
  }
  function color(g) { return PALETTE[g % PALETTE.length]; }
  function splitName(name) {
    var m = /^(\[[^\]]*\] )(.*)$/.exec(name);
    return m ? [m[1], m[2]] : ["", name];
  }

  // -- header, cards, toolbar ----------------------------------------------------------
  var b = data.build;
  var head = el("header", "top");
  head.appendChild(el("div", "logo"));
  head.appendChild(el("h1", null, b.name || b.ref));
  head.appendChild(el("span", "pill " + b.status, b.status));
  var meta = el("div", "meta");
  meta.appendChild(document.createTextNode("build "));
  meta.appendChild(el("b", "mono", b.ref));
  meta.appendChild(document.createTextNode(" · started " + b.started +
    (b.platforms.length ? " · " + b.platforms.join(", ") : "") +
    (b.target ? " · target " + b.target : "")));
  head.appendChild(meta);
  root.appendChild(head);
  if (b.error) root.appendChild(el("div", "errorline", b.error));

  var cards = el("section", "cards");
  function card(k, v, s, cls) {
    var c = el("div", "card" + (cls ? " " + cls : ""));
    c.appendChild(el("div", "k", k)); c.appendChild(el("div", "v", v));
    c.appendChild(el("div", "s", s)); cards.appendChild(c);
  }
  var pct = b.steps.total ? Math.round(100 * b.steps.cached / b.steps.total) : 0;
  card("Duration", fmt(b.duration), b.status === "running" ? "still running" : b.status);
  card("Steps", b.steps.completed + "/" + b.steps.total, b.steps.ran + " ran · " + b.steps.cached + " cached (" + pct + "%)");
  card("Critical path", fmt(b.critical_seconds), data.critical.length + " steps · " +
       (b.duration ? Math.round(100 * b.critical_seconds / b.duration) : 0) + "% of the build", "crit");
  card("Parallelism", "×" + b.max_parallelism, "most steps running at once");
  card("Stages", String(data.groups.length), "groups of stage and platform");
  root.appendChild(cards);

  var bar = el("div", "toolbar");
  var search = el("input"); search.type = "search"; search.placeholder = "Filter steps (press /)";
  bar.appendChild(search);
  function toggle(text, key) {
    var l = el("label"), cb = el("input"); cb.type = "checkbox";
    cb.addEventListener("change", function () { state[key] = cb.checked; rebuild(); });
    l.appendChild(cb); l.appendChild(document.createTextNode(text)); bar.appendChild(l);
  }
  toggle("Hide cached", "hideCached");
  toggle("Critical path only", "criticalOnly");
  [["−", 1 / 1.6], ["Fit", 0], ["+", 1.6]].forEach(function (z) {
    var bt = el("button", null, z[0]);
    bt.addEventListener("click", function () { zoom(z[1]); });
    bar.appendChild(bt);
  });
  var legend = el("div", "legend");
  [["l-ran", "ran"], ["l-cached", "cached"], ["l-crit", "critical path"], ["l-fail", "failed"]]
    .forEach(function (x) { var s = el("span"); s.appendChild(el("i", x[0])); s.appendChild(document.createTextNode(x[1])); legend.appendChild(s); });
  bar.appendChild(legend);
  root.appendChild(bar);

  // -- chart skeleton ------------------------------------------------------------------
  var chart = el("div", "chart"); chart.id = "chart";
  var headRow = el("div", "head");
  var corner = el("div", "corner");
  corner.appendChild(el("div", null, "Step"));
  var axis = el("div", "axis");
  headRow.appendChild(corner); headRow.appendChild(axis);
  var body = el("div", "body");
  var grid = el("div", "grid");
  body.appendChild(grid);
  var rowsLayer = el("div", "rows");
  body.appendChild(rowsLayer);
  chart.appendChild(headRow); chart.appendChild(body);
  root.appendChild(chart);
  var tip = el("div", "tooltip"); document.body.appendChild(tip);
  var details = el("aside", "details"); details.id = "details"; document.body.appendChild(details);

  function axisEnd() { return Math.max(data.build.duration, data.ticks[data.ticks.length - 1] || 0); }
  function trackWidth() { return Math.max(200, axisEnd() * state.pps + 90); }
  function x(t) { return t * state.pps; }

  function fit() {
    var avail = Math.max(300, chart.clientWidth - LABEL - 100);
    state.pps = avail / Math.max(data.build.duration, data.ticks[data.ticks.length - 1] || 0, 0.001);
  }
  function zoom(f) {
    var centre = (chart.scrollLeft + (chart.clientWidth - LABEL) / 2) / state.pps;
    if (f === 0) fit(); else state.pps *= f;
    drawAxis(); layout();
    if (f !== 0) chart.scrollLeft = Math.max(0, centre * state.pps - (chart.clientWidth - LABEL) / 2);
  }

  function drawAxis() {
    axis.textContent = "";
    var w = trackWidth();
    axis.style.width = w + "px";
    headRow.style.width = (LABEL + w) + "px";
    body.style.width = (LABEL + w) + "px";
    var H = 54, peak = Math.max(1, data.build.max_parallelism);
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", w); svg.setAttribute("height", H);
    var pts = data.parallelism, d = "M0," + H;
    for (var i = 0; i < pts.length; i++) {
      var px = x(pts[i][0]), py = H - (pts[i][1] / peak) * (H - 6);
      var prev = i ? H - (pts[i - 1][1] / peak) * (H - 6) : H;
      d += " L" + px.toFixed(1) + "," + prev.toFixed(1) + " L" + px.toFixed(1) + "," + py.toFixed(1);
    }
    d += " L" + x(data.build.duration).toFixed(1) + "," + H + " Z";
    var path = document.createElementNS(ns, "path");
    path.setAttribute("d", d); path.id = "parallelism";
    svg.appendChild(path);
    axis.appendChild(svg);
    axis.appendChild(el("div", "plabel", "running steps (max " + data.build.max_parallelism + ")"));
    grid.textContent = "";
    grid.style.left = LABEL + "px"; grid.style.width = w + "px";
    data.ticks.forEach(function (t, i) {
      var tk = el("div", "tick" + (i === 0 ? " first" : ""), fmt(t)); tk.style.left = x(t) + "px"; axis.appendChild(tk);
      var g = el("div"); g.style.left = x(t) + "px"; grid.appendChild(g);
    });
  }

  // -- rows ----------------------------------------------------------------------------
  function visibleBar(bb) {
    if (state.hideCached && bb.st === "cached") return false;
    if (state.criticalOnly && !bb.crit) return false;
    if (state.filter) {
      var f = state.filter;
      return (bb.name + " " + bb.cmd + " " + bb.d + " #" + bb.n).toLowerCase().indexOf(f) !== -1;
    }
    return true;
  }
  function rebuild() {
    var rows = [], gi = -1, members = {};
    data.bars.forEach(function (bb) { (members[bb.g] = members[bb.g] || []).push(bb); });
    data.groups.forEach(function (g, i) {
      var list = (members[i] || []).filter(visibleBar);
      if (!list.length) return;
      rows.push({ group: g, index: i, bars: list, all: members[i] });
      if (!state.collapsed[i]) list.forEach(function (bb) { rows.push({ bar: bb }); });
      gi = i;
    });
    state.rows = rows;
    body.style.height = rows.length * ROW + "px";
    layout();
  }
  var drawn = { from: -1, to: -1, pps: -1, n: -1 };
  function layout() {
    drawn.pps = -1; render();
  }
  function render() {
    var top = chart.scrollTop, h = chart.clientHeight || 800;
    var from = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
    var to = Math.min(state.rows.length, Math.ceil((top + h) / ROW) + OVERSCAN);
    if (from === drawn.from && to === drawn.to && drawn.pps === state.pps && drawn.n === state.rows.length) return;
    drawn = { from: from, to: to, pps: state.pps, n: state.rows.length };
    rowsLayer.textContent = "";
    var w = trackWidth();
    var frag = document.createDocumentFragment();
    for (var i = from; i < to; i++) frag.appendChild(rowEl(state.rows[i], i, w));
    rowsLayer.appendChild(frag);
    root.dataset.rows = String(state.rows.length);
  }
  function rowEl(r, i, w) {
    var row = el("div", "row");
    row.style.top = i * ROW + "px";
    var label = el("div", "label"), track = el("div", "track");
    track.style.width = w + "px";
    if (r.group) {
      row.className += " group-row" + (state.collapsed[r.index] ? " collapsed" : "");
      label.appendChild(el("span", "chev", "▾"));
      var sw = el("span", "gswatch"); sw.style.background = color(r.index); label.appendChild(sw);
      label.appendChild(el("span", "nm", r.group.label));
      var ran = r.all.filter(function (q) { return q.st !== "cached"; }).length;
      label.appendChild(el("span", "gcount", r.all.length + " steps · " + ran + " ran"));
      var s0 = Infinity, e0 = 0;
      r.all.forEach(function (q) { s0 = Math.min(s0, q.s); e0 = Math.max(e0, q.e); });
      var span = el("div", "span"); span.style.left = x(s0) + "px";
      span.style.width = Math.max(2, x(e0) - x(s0)) + "px"; span.style.background = color(r.index);
      track.appendChild(span);
      label.addEventListener("click", function () { state.collapsed[r.index] = !state.collapsed[r.index]; rebuild(); });
      row.dataset.group = String(r.index);
    } else {
      var bb = r.bar, parts = splitName(bb.name);
      if (state.selected === bb.n) row.className += " selected";
      label.className += (bb.crit ? " crit" : "") + (bb.st === "failed" ? " failed" : "");
      label.appendChild(el("span", "num", "#" + bb.n));
      label.appendChild(el("span", "dot"));
      var nm = el("span", "nm");
      if (parts[0]) nm.appendChild(el("span", "pfx", parts[0]));
      nm.appendChild(document.createTextNode(parts[1]));
      label.appendChild(nm);
      label.title = bb.name;
      var bar = el("div", "bar " + bb.st + (bb.crit ? " critical" : ""));
      bar.style.setProperty("--c", color(bb.g));
      var left = x(bb.s), width = Math.max(bb.st === "cached" ? 10 : 3, x(bb.e) - x(bb.s));
      bar.style.left = left + "px"; bar.style.width = width + "px";
      bar.dataset.n = String(bb.n); bar.dataset.digest = bb.d;
      track.appendChild(bar);
      var dur = el("span", "dur" + (bb.st === "cached" ? " cachedtxt" : ""),
                   bb.st === "cached" ? "cached" : fmt(bb.e - bb.s) + (bb.st === "running" ? "+" : ""));
      dur.style.left = (left + width + 6) + "px";
      track.appendChild(dur);
      bar.addEventListener("mousemove", function (ev) { showTip(bb, ev); });
      bar.addEventListener("mouseleave", function () { tip.style.display = "none"; });
      bar.addEventListener("click", function () { select(bb.n); });
      label.addEventListener("click", function () { select(bb.n); });
    }
    row.appendChild(label); row.appendChild(track);
    return row;
  }

  // -- tooltip and details -------------------------------------------------------------
  function stateText(bb) {
    return { done: "ran", cached: "cached", failed: "failed", running: "did not finish" }[bb.st] || bb.st;
  }
  function showTip(bb, ev) {
    tip.textContent = "";
    tip.appendChild(el("div", "t", "#" + bb.n + " " + bb.name));
    tip.appendChild(el("div", "m", stateText(bb) + " · " + fmt(bb.e - bb.s) + " · at +" + fmt(bb.s) +
                       (bb.crit ? " · on the critical path" : "")));
    if (bb.miss) tip.appendChild(el("div", "m", "not cached: " + bb.miss));
    if (bb.err) tip.appendChild(el("div", "m", "error: " + bb.err));
    tip.style.display = "block";
    var tx = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
    var ty = ev.clientY + 16 + tip.offsetHeight > window.innerHeight ? ev.clientY - tip.offsetHeight - 10 : ev.clientY + 16;
    tip.style.left = tx + "px"; tip.style.top = ty + "px";
  }
  function select(n) {
    state.selected = n;
    var bb = byNumber[n];
    details.textContent = "";
    if (!bb) { details.classList.remove("open"); layout(); return; }
    var close = el("button", "close", "×"); close.title = "Close (Esc)";
    close.addEventListener("click", function () { state.selected = null; details.classList.remove("open"); layout(); });
    details.appendChild(close);
    details.appendChild(el("h2", null, "#" + bb.n + " " + bb.name));
    var dl = el("dl");
    function row(k, v, cls) { if (v === "" || v === undefined || v === null) return; dl.appendChild(el("dt", null, k)); dl.appendChild(el("dd", cls, v)); }
    row("Status", stateText(bb) + (bb.crit ? " · critical path" : ""));
    row("Duration", fmt(bb.e - bb.s));
    row("Started", "+" + fmt(bb.s) + " after the build began");
    row("Stage", data.groups[bb.g] ? data.groups[bb.g].label : "");
    row("Not cached", bb.miss, "miss");
    row("Error", bb.err, "err");
    row("Source", bb.loc);
    row("Digest", bb.d, "mono");
    details.appendChild(dl);
    if (bb.in.length) {
      details.appendChild(el("h3", null, "Waited for"));
      var ins = el("div", "inputs");
      bb.in.forEach(function (m) { var a = el("a", null, "#" + m); a.addEventListener("click", function () { select(m); reveal(m); }); ins.appendChild(a); });
      details.appendChild(ins);
    }
    details.appendChild(el("h3", null, "Command"));
    details.appendChild(el("pre", null, bb.src || bb.cmd));
    details.appendChild(el("h3", null, "Log" + (bb.log ? " (last lines)" : "")));
    details.appendChild(el("pre", null, bb.log ? bb.log + (bb.clip ? "\n[output clipped]" : "") : "(no output)"));
    details.classList.add("open");
    layout();
  }
  function reveal(n) {
    for (var i = 0; i < state.rows.length; i++) {
      if (state.rows[i].bar && state.rows[i].bar.n === n) {
        chart.scrollTop = Math.max(0, i * ROW - chart.clientHeight / 3);
        var bb = state.rows[i].bar;
        chart.scrollLeft = Math.max(0, x(bb.s) - 120);
        return;
      }
    }
  }

  // -- events --------------------------------------------------------------------------
  var pending = false;
  chart.addEventListener("scroll", function () {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; render(); });
  });
  chart.addEventListener("wheel", function (ev) {
    if (!ev.ctrlKey) return;
    ev.preventDefault(); zoom(ev.deltaY < 0 ? 1.25 : 0.8);
  }, { passive: false });
  search.addEventListener("input", function () { state.filter = search.value.trim().toLowerCase(); rebuild(); });
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "/" && document.activeElement !== search) { ev.preventDefault(); search.focus(); }
    if (ev.key === "Escape") { state.selected = null; details.classList.remove("open"); layout(); }
  });
  window.addEventListener("resize", function () { layout(); });

  if (!data.bars.length) {
    chart.appendChild(el("div", "empty", "This build recorded no steps."));
  }
  fit();
  drawAxis();
  rebuild();
  var hash = /^#step=(\d+)$/.exec(location.hash);
  if (hash && byNumber[+hash[1]]) {
    details.style.transition = "none";  // (opened at load: no slide-in)
    select(+hash[1]); reveal(+hash[1]);
  }
  root.dataset.ready = "1";
  root.dataset.bars = String(data.bars.length);
  root.dataset.critical = String(data.critical.length);
})();
