"use strict";
// The tower-perf console: reads the event stream next to this page and draws every snapshot.
// Every figure is written as text and also as `data-k` (a stable key) / `data-v` (the exact
// value), so tests and scripts can read the page. Strings from the server (routes, paths,
// request ids) only ever go into `textContent`, never into HTML.
//
// Query parameters, for scripted use: `frames=N` closes the stream after N snapshots, or at the
// first script error (a headless browser can then finish); `purge-tag=T` submits the purge form
// for tag T once the first snapshot is shown.
//
// What the page keeps is bounded: the last five minutes of points per route (at most
// MAX_POINTS), routes the server still reports, and the last snapshot.

const HISTORY_MS = 300000; // the charts' span: five minutes, older points are dropped
const MAX_POINTS = 3000; // per route, whatever the interval (at least 100 ms)
const MIN_SPAN_MS = 10000; // a page just opened charts its first ten seconds
const COLORS = ["#58a6ff", "#3fb950", "#d29922", "#f85149", "#bc8cff", "#39c5cf", "#ff7b72", "#e3b341", "#7ee787", "#a5d6ff", "#ffa657", "#d2a8ff"];
const params = new URLSearchParams(location.search);
const maxFrames = Number(params.get("frames")) || 0;
const base = location.pathname.replace(/\/+$/, "") + "/";
const body = document.body;
const history = new Map(); // route -> [{t, rate, p99}]
let previous = null; // the last snapshot, for rates
let frames = 0;
let pendingControls = 0;
let lastSeq = 0; // seq of the latest snapshot drawn
let settledAfter = 0; // seq current when the last control answered: later frames show its effect
let source = null;

let jsErrors = 0;
function reportError(message) {
  jsErrors += 1;
  body.dataset.errors = String(jsErrors);
  const el = document.getElementById("js-errors");
  el.hidden = false;
  el.textContent = `${jsErrors} script error(s): ${message}`;
  el.dataset.k = "js-errors";
  el.dataset.v = el.textContent;
  // A scripted run (`frames=N`) ends at the first error, so that it is reported at once.
  if (maxFrames && source) stop("failed");
}
window.addEventListener("error", (e) => reportError(e.message));
window.addEventListener("unhandledrejection", (e) => reportError(String(e.reason)));

const $ = (id) => document.getElementById(id);

function el(tag, text, key, value, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (key) {
    node.dataset.k = key;
    node.dataset.v = String(value === undefined ? text : value);
  }
  if (cls) node.className = cls;
  return node;
}

function num(v, digits = 0) {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  return Number(v).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function bytes(v) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  let n = Number(v);
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${num(n, i ? 1 : 0)} ${units[i]}`;
}

function pct(v) { return `${num(100 * v, 1)} %`; }

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c);
  return tr;
}

function fill(id, rows) { $(id).replaceChildren(...rows); }

function pairs(id, prefix, list) {
  const nodes = [];
  for (const [label, key, value, text] of list) {
    nodes.push(el("dt", label));
    nodes.push(el("dd", text === undefined ? num(value) : text, `${prefix}.${key}`, value));
  }
  fill(id, nodes);
}

function routeRate(route, seconds) {
  if (!previous || seconds <= 0) return 0;
  const before = previous.latency.routes.find((r) => r.route === route.route);
  const delta = route.total.count - (before ? before.total.count : 0);
  return Math.max(0, delta) / seconds;
}

function drawRoutes(s) {
  const seconds = previous ? (s.unix_ms - previous.unix_ms) / 1000 : 0;
  const rows = [];
  for (const r of s.latency.routes) {
    const rate = routeRate(r, seconds);
    const w = r.window;
    const k = `route:${r.route}:`;
    const points = history.get(r.route) || [];
    points.push({ t: s.unix_ms, rate, p99: w.p99_ms });
    const oldest = s.unix_ms - HISTORY_MS;
    let drop = Math.max(0, points.length - MAX_POINTS);
    while (drop < points.length && points[drop].t < oldest) drop += 1;
    if (drop) points.splice(0, drop);
    history.set(r.route, points);
    rows.push(row([
      el("td", r.route, `${k}route`),
      el("td", num(rate, 1), `${k}rate`, rate.toFixed(3)),
      el("td", num(w.count), `${k}count`, w.count),
      el("td", num(w.errors), `${k}errors`, w.errors, w.errors ? "bad" : ""),
      el("td", num(w.slow), `${k}slow`, w.slow, w.slow ? "warn" : ""),
      el("td", num(w.p50_ms, 1), `${k}p50`, w.p50_ms),
      el("td", num(w.p95_ms, 1), `${k}p95`, w.p95_ms),
      el("td", num(w.p99_ms, 1), `${k}p99`, w.p99_ms),
      el("td", num(w.max_ms, 1), `${k}max`, w.max_ms),
      el("td", num(r.total.count), `${k}total`, r.total.count),
      el("td", num(r.total.errors), `${k}total_errors`, r.total.errors),
    ]));
  }
  fill("routes", rows);
  const reported = new Set(s.latency.routes.map((r) => r.route));
  for (const route of [...history.keys()]) if (!reported.has(route)) history.delete(route);
  $("window").textContent = num(s.latency.window_ms / 1000);
  drawChart($("chart-rate"), "rate", s.unix_ms);
  drawChart($("chart-p99"), "p99", s.unix_ms);
  const legend = [];
  [...history.keys()].forEach((route, i) => {
    const item = el("span", route);
    const swatch = el("i");
    swatch.style.background = COLORS[i % COLORS.length];
    item.prepend(swatch);
    legend.push(item);
  });
  fill("legend", legend);
}

// `now`: the snapshot's time (the server's clock, as every point's), the chart's right edge.
function drawChart(canvas, field, now) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width;
  const h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  let first = now;
  let max = 1;
  for (const points of history.values()) {
    if (points.length) first = Math.min(first, points[0].t);
    for (const p of points) max = Math.max(max, p[field] || 0);
  }
  const span = Math.min(HISTORY_MS, Math.max(MIN_SPAN_MS, now - first));
  ctx.strokeStyle = "#26323d";
  ctx.fillStyle = "#8b98a5";
  ctx.font = "11px sans-serif";
  for (const f of [0, 0.5, 1]) {
    const y = h - 14 - f * (h - 24);
    ctx.beginPath(); ctx.moveTo(30, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText(num(max * f, max < 10 ? 1 : 0), 2, y + 4);
  }
  ctx.fillText(span >= HISTORY_MS ? "-5 min" : `-${num(span / 1000)} s`, 30, h - 2);
  ctx.fillText("now", w - 24, h - 2);
  [...history.values()].forEach((points, i) => {
    ctx.strokeStyle = COLORS[i % COLORS.length];
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    points.forEach((p, j) => {
      const x = 30 + (w - 30) * (1 - Math.min(1, (now - p.t) / span));
      const y = h - 14 - ((p[field] || 0) / max) * (h - 24);
      if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  });
}

function drawCache(c) {
  const memoryLookups = c.hits + c.misses + c.stale;
  const tiers = [row([
    el("td", "memory"),
    el("td", pct(c.hit_ratio), "cache.memory.hit_ratio", c.hit_ratio),
    el("td", num(c.hits), "cache.memory.hits", c.hits),
    el("td", num(c.misses), "cache.memory.misses", c.misses),
    el("td", num(c.stale), "cache.memory.stale", c.stale),
    el("td", `${num(c.bypass)} bypass, ${num(c.collapsed)} coalesced`, "cache.memory.lookups", memoryLookups),
  ])];
  if (c.redis) {
    const r = c.redis;
    const lookups = r.hits + r.misses + r.stale;
    const ratio = lookups ? (r.hits + r.stale) / lookups : 0;
    tiers.push(row([
      el("td", "redis"),
      el("td", pct(ratio), "cache.redis.hit_ratio", ratio),
      el("td", num(r.hits), "cache.redis.hits", r.hits),
      el("td", num(r.misses), "cache.redis.misses", r.misses),
      el("td", num(r.stale), "cache.redis.stale", r.stale),
      el("td", `${num(r.stores)} stored, ${num(r.errors)} errors, link ${r.link.open ? "open (skipped)" : "closed"}`, "cache.redis.errors", r.errors, r.errors ? "warn" : ""),
    ]));
  }
  fill("cache-tiers", tiers);
  pairs("cache", "cache", [
    ["entries", "entries", c.entries],
    ["bytes", "bytes", c.bytes, `${bytes(c.bytes)} of ${bytes(c.max_bytes)}`],
    ["evicted (size)", "evicted_size", c.evicted_size],
    ["evicted (expired)", "evicted_expired", c.evicted_expired],
    ["evicted (purged)", "evicted_explicit", c.evicted_explicit],
    ["replaced", "evicted_replaced", c.evicted_replaced],
    ["recompressed", "recompressed", c.recompressed, `${num(c.recompressed)} (${bytes(c.recompress_saved_bytes)} saved)`],
  ]);
}

function drawQueue(q) {
  pairs("queue", "queue", [
    ["limit", "limit", q.limit],
    ["in flight", "in_flight", q.in_flight],
    ["waiting", "queued", q.queued],
    ["overloaded", "overloaded", q.overloaded, q.overloaded ? "yes (CoDel)" : "no"],
  ]);
  fill("queue-classes", q.classes.map((c) => {
    const k = `queue:${c.priority}:`;
    return row([
      el("td", c.priority),
      el("td", num(c.queued), `${k}queued`, c.queued),
      el("td", num(c.admitted), `${k}admitted`, c.admitted),
      el("td", num(c.rejected), `${k}rejected`, c.rejected, c.rejected ? "warn" : ""),
      el("td", num(c.timed_out), `${k}timed_out`, c.timed_out),
      el("td", num(c.wait_p99, 1), `${k}wait_p99`, c.wait_p99),
    ]);
  }));
}

function breakerButton(key, action) {
  const b = el("button", action);
  b.addEventListener("click", () => control("breaker", { key, action }));
  return b;
}

function drawBreakers(list) {
  fill("breakers", list.map((b) => {
    const k = `breaker:${b.key}:`;
    const cls = b.state === "closed" ? "ok" : b.state === "open" ? "bad" : "warn";
    const admin = el("td");
    admin.append(breakerButton(b.key, "open"), " ", breakerButton(b.key, "close"));
    return row([
      el("td", b.key),
      el("td", b.state + (b.forced_open ? " (forced)" : ""), `${k}state`, b.state, cls),
      el("td", pct(b.failure_rate), `${k}failure_rate`, b.failure_rate),
      el("td", pct(b.slow_call_rate), `${k}slow_call_rate`, b.slow_call_rate),
      el("td", num(b.calls), `${k}calls`, b.calls),
      admin,
    ]);
  }));
}

function drawCompression(c) {
  if (!c) return;
  pairs("compression", "compression", [
    ["load tier", "tier", c.tier, c.tier],
    ["encoder utilization", "utilization", c.utilization, pct(c.utilization)],
    ["compressing now", "in_flight", c.in_flight],
  ]);
  fill("codings", c.encodings.map((e) => {
    const k = `coding:${e.encoding}:`;
    return row([
      el("td", e.encoding),
      el("td", e.level === null ? "identity" : e.level, `${k}level`, e.level),
      el("td", num(e.responses), `${k}responses`, e.responses),
      el("td", e.input_bytes ? num(e.ratio, 2) : "-", `${k}ratio`, e.ratio),
      el("td", bytes(e.input_bytes), `${k}input_bytes`, e.input_bytes),
      el("td", bytes(e.output_bytes), `${k}output_bytes`, e.output_bytes),
      el("td", e.last_decision || "-", `${k}last_decision`, e.last_decision),
    ]);
  }));
}

function drawRateLimit(r) {
  pairs("rate-limit", "rate_limit", [
    ["allowed", "allowed", r.allowed],
    ["limited (429)", "limited", r.limited],
    ["bypassed", "bypassed", r.bypassed],
    ["clients tracked", "tracked_keys", r.tracked_keys, `${num(r.tracked_keys)} of ${num(r.max_keys)}`],
  ]);
}

function drawSlow(list) {
  fill("slow", list.map((e, i) => {
    const k = `slow:${i}:`;
    const phases = (e.phases || []).map((p) => `${p.name} ${num(p.ms, 1)}`).join(", ");
    return row([
      el("td", new Date(e.unix_ms).toLocaleTimeString()),
      el("td", e.method, null, null, "text"),
      el("td", e.path, `${k}path`, e.path, "text"),
      el("td", e.status === null ? "-" : e.status, `${k}status`, e.status),
      el("td", num(e.duration_ms, 1), `${k}duration`, e.duration_ms),
      el("td", phases || "-", `${k}phases`, phases, "text"),
      el("td", e.request_id || "-", `${k}request_id`, e.request_id || "", "text"),
    ]);
  }));
}

function draw(s) {
  drawRoutes(s);
  drawCache(s.cache);
  drawQueue(s.queue);
  drawBreakers(s.breakers.breakers);
  drawCompression(s.compression);
  drawRateLimit(s.rate_limit);
  drawSlow(s.slow_requests);
  previous = s;
  lastSeq = s.seq;
  frames += 1;
  body.dataset.frames = String(frames);
  body.dataset.seq = String(s.seq);
  $("seq").textContent = String(s.seq);
  $("at").textContent = new Date(s.unix_ms).toLocaleTimeString();
}

async function control(path, payload) {
  pendingControls += 1;
  const out = $("control-result");
  try {
    const response = await fetch(base + path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(payload),
      credentials: "same-origin",
    });
    const text = await response.text();
    out.textContent = `${path}: ${response.status} ${text}`;
    out.dataset.k = `control:${path}`;
    out.dataset.v = String(response.status);
  } catch (e) {
    out.textContent = `${path}: ${e}`;
  } finally {
    pendingControls -= 1;
    settledAfter = lastSeq;
    maybeClose();
  }
}

$("purge-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = e.target;
  const payload = { [f.kind.value]: f.value.value.trim(), hard: !f.soft.checked };
  control("purge", payload);
});

$("reset-form").addEventListener("submit", (e) => {
  e.preventDefault();
  control("rate-limit/reset", { client: e.target.client.value.trim() });
});

// Closes the stream once `frames=N` snapshots were drawn, no control is pending, and, after a
// control, a snapshot computed after its answer was drawn (the one after the next: the next
// may have been computed before it).
function maybeClose() {
  const settled = pendingControls === 0 && (settledAfter === 0 || lastSeq > settledAfter + 1);
  if (maxFrames && frames >= maxFrames && settled && source) stop("stopped");
}

function stop(status) {
  source.close();
  source = null;
  $("status").textContent = status;
  body.dataset.done = "true";
}

function autoPurge() {
  const tag = params.get("purge-tag");
  if (!tag || frames !== 1) return;
  const f = $("purge-form");
  f.kind.value = "tag";
  f.value.value = tag;
  f.requestSubmit();
}

function connect() {
  source = new EventSource(base + "events");
  source.addEventListener("open", () => {
    $("status").textContent = "live";
    $("status").className = "pill ok";
  });
  source.addEventListener("error", () => {
    $("status").textContent = "reconnecting";
    $("status").className = "pill bad";
  });
  source.addEventListener("snapshot", (e) => {
    draw(JSON.parse(e.data));
    autoPurge();
    maybeClose();
  });
}

connect();
