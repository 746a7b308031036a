// The operator page: polls the console's JSON routes and draws them. Charts are plain SVG
// (polylines, one circle per point when there are few), built here: no library, no build step.
// Every value reaches the page through textContent or attributes, never as HTML.
"use strict";

const KEY = "streamrec.apiKey";
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#6172f3", "#f79009", "#c01048", "#12805c"];
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

// A key typed as Unicode goes out as its UTF-8 bytes, one header character per byte: the
// server compares the header's bytes with the key's UTF-8 (fetch headers are byte strings).
function headerValue(key) {
  return String.fromCharCode(...new TextEncoder().encode(key));
}

class Unauthorized extends Error {}

async function api(path, as = "json") {
  const key = sessionStorage.getItem(KEY);
  const headers = key ? { "X-API-Key": headerValue(key) } : {};
  const response = await fetch(path, { headers });
  if (response.status === 401) throw new Unauthorized("the API key was refused");
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.error || `${path}: HTTP ${response.status}`);
  }
  return as === "blob" ? response.blob() : response.json();
}

const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
const stamp = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z";
function age(ms, now) {
  const s = Math.max(0, (now - ms) / 1000);
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
const num = (v, digits = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));

// A line chart of `series` ([{name, values}]) against times `t` (ms) in an <svg>; `label`
// writes the y axis' values.
function lineChart(svg, t, series, label = shortNum) {
  svg.replaceChildren();
  const width = svg.clientWidth || 480, height = svg.clientHeight || 190;
  const pad = { left: 54, right: 8, top: 16, bottom: 18 };
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.dataset.points = String(t.length);
  const values = series.flatMap((s) => s.values).filter((v) => v !== null);
  if (!t.length || !values.length) {
    svg.append(text(width / 2, height / 2, "no micro-batch in this window", "middle"));
    return;
  }
  const [t0, t1] = [t[0], t[t.length - 1] === t[0] ? t[0] + 1 : t[t.length - 1]];
  const top = Math.max(...values) * 1.08 || 1;
  const x = (v) => pad.left + ((v - t0) / (t1 - t0)) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
  svg.append(svgEl("line", { class: "axis", x1: pad.left, x2: width - pad.right,
    y1: y(0), y2: y(0) }));
  for (const v of [0, top / 2, top]) svg.append(text(pad.left - 4, y(v) + 3, label(v), "end"));
  svg.append(text(pad.left, height - 4, clock(t0), "start"));
  svg.append(text(width - pad.right, height - 4, clock(t1), "end"));
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = t.map((ti, j) => [ti, s.values[j]]).filter(([, v]) => v !== null);
    svg.append(svgEl("polyline", { stroke: color, "data-series": s.name,
      points: pts.map(([ti, v]) => `${x(ti).toFixed(1)},${y(v).toFixed(1)}`).join(" ") }));
    if (t.length <= 200) {
      for (const [ti, v] of pts) {
        const dot = svgEl("circle", { cx: x(ti), cy: y(v), r: 2.2, fill: color });
        const tip = svgEl("title", {});
        tip.textContent = `${s.name} ${num(v)} at ${clock(ti)}`;
        dot.append(tip);
        svg.append(dot);
      }
    }
    svg.append(text(pad.left + 6 + i * 90, 10, s.name, "start", color));
  });
}

function text(x, y, content, anchor, color) {
  const node = svgEl("text", { x, y, "text-anchor": anchor });
  if (color) node.setAttribute("style", `fill: ${color}`);
  node.textContent = content;
  return node;
}

// Milliseconds as a short duration: 850 ms, 2.5 s, 3.0 min, 1.2 h, 730.5 d.
function duration(ms) {
  const steps = [[86400000, "d"], [3600000, "h"], [60000, "min"], [1000, "s"]];
  for (const [size, unit] of steps) if (ms >= size) return `${(ms / size).toFixed(1)} ${unit}`;
  return `${ms.toFixed(0)} ms`;
}

function shortNum(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return v >= 10 ? v.toFixed(0) : v.toFixed(1);
}

async function refreshStream() {
  const minutes = $("window").value;
  const data = await api(`/console/api/stream?minutes=${minutes}&points=300`);
  const lists = data.lists, archive = data.archive;
  lineChart($("chart-lag"), lists.t_ms, [
    { name: "p50", values: lists.lag_p50_ms }, { name: "p95", values: lists.lag_p95_ms },
    { name: "p99", values: lists.lag_p99_ms }], duration);
  lineChart($("chart-rate"), lists.t_ms, [
    { name: "in", values: lists.input_rps }, { name: "processed", values: lists.processed_rps }]);
  lineChart($("chart-duration"), lists.t_ms, [{ name: "lists", values: lists.duration_ms }],
    duration);
  lineChart($("chart-dead"), archive.t_ms, [
    { name: "dead letters/s", values: archive.dead_letters_per_s }]);
  const batches = lists.batches.reduce((a, b) => a + b, 0);
  const first = lists.batch_first[0], last = lists.batch_last[lists.batch_last.length - 1];
  const range = batches ? `, batches ${first}–${last}` : "";
  $("stream-caption").textContent = `${batches} lists micro-batches in ${lists.t_ms.length} ` +
    `points${range}; ${data.entries} of ${data.total_entries} entries read` +
    (data.truncated ? " (window cut to the newest)" : "");
  $("stream-caption").dataset.batches = String(batches);
  const keep = data.keeping_up;
  const tone = { "keeping up": "ok", saturated: "warn", behind: "bad" }[keep.status] || "";
  $("keeping-up").className = `keep ${tone}`;
  $("keeping-up").textContent = `${keep.status}: ${keep.reason}`;
  const newest = data.newest;
  $("status").textContent = newest
    ? `newest micro-batch ${age(newest.t_ms, Date.now())} ago (${newest.query} ` +
      `${newest.batch}${newest.query === "lists" ? `, model ${newest.model || "none"}` : ""})`
    : "no micro-batch recorded yet";
}

async function refreshDeadLetters() {
  const data = await api("/console/api/dead-letters");
  $("dead-caption").textContent = `topic ${data.topic}, read ${clock(data.read_ms)}`;
  $("dead-letters").tBodies[0].replaceChildren(...data.letters.map((d) => el("tr", {},
    el("td", {}, stamp(d.time_ms)), el("td", {}, d.reason), el("td", {}, d.source),
    el("td", { class: "num" }, d.value_bytes + (d.truncated ? " (cut)" : "")),
    el("td", {}, el("code", {}, d.value_preview)))));
}

function holdoutCell(holdout) {
  if (!holdout) return "–";
  const fmt = (m) => (m ? `${num(m.ndcg, 4)} (${num(m.precision, 4)})` : "–");
  return el("span", {}, `model ${fmt(holdout.als)}`, el("br"), `popularity ${fmt(holdout.popularity)}`,
    el("br"), `live ${fmt(holdout.current)}`);
}

async function refreshModels() {
  const data = await api("/console/api/models");
  $("live-model").textContent = data.live ? `live model ${data.live}` : "no model yet";
  if (!data.versions.length) {
    const none = el("td", { colspan: 6 }, "no model in the store yet: run `streamrec batch run`");
    $("model-table").tBodies[0].replaceChildren(el("tr", {}, none));
    return;
  }
  $("model-table").tBodies[0].replaceChildren(...data.versions.map((v) => {
    if (v.error) return el("tr", {}, el("td", {}, v.version), el("td", { colspan: 5 }, v.error));
    const p = v.params || {}, tuning = v.tuning || {}, gate = v.promotion || {};
    const chosen = tuning.tuned ? "tuned" : Object.keys(tuning).length ? "kept" : "config";
    const params = `${p.family || "als"} rank ${p.rank ?? "–"} reg ${p.reg_param ?? "–"} ` +
      `alpha ${p.alpha ?? "–"} (${chosen})`;
    const row = el("tr", { "data-version": v.version },
      el("td", {}, v.version, v.version === data.live ? " ● live" : ""),
      el("td", {}, v.trained_at || "–"),
      el("td", {}, `${v.events ?? "–"} events, ${v.users ?? "–"} users, ${v.items ?? "–"} items`),
      el("td", {}, params), el("td", {}, holdoutCell(v.holdout)),
      el("td", {}, gate.promote === undefined ? "–" : gate.promote ? "promoted" : "refused",
        el("br"), gate.reason || ""));
    return row;
  }));
}

const plotUrls = new Map();
let plotsOf = null; // the version whose plots are shown
async function refreshSegments() {
  const data = await api("/console/api/segments");
  const report = data.report;
  if (data.version !== plotsOf) {
    for (const url of plotUrls.values()) URL.revokeObjectURL(url);
    plotUrls.clear();
    $("plots").replaceChildren();
    $("segment-table").tBodies[0].replaceChildren();
    plotsOf = data.version;
  }
  if (!report) {
    $("segment-caption").textContent = data.version ? `${data.version} has no segments` : "";
    return;
  }
  $("segment-caption").textContent = `${data.version}: ${report.method}, k=${report.k}, ` +
    `silhouette ${num(report.silhouette, 3)}`;
  const sizes = report.segment_sizes || {};
  const most = Math.max(1, ...Object.values(sizes));
  $("segment-table").tBodies[0].replaceChildren(...(report.segments || []).map((s) => el("tr", {},
    el("td", {}, s.segment), el("td", { class: "num" }, sizes[String(s.segment)] ?? s.users),
    el("td", {}, el("div", { class: "bar",
      style: `width: ${(100 * (sizes[String(s.segment)] ?? 0)) / most}%` })),
    el("td", {}, (s.distinctive || []).slice(0, 8).map((i) => i.title).join(", ")))));
  for (const [name, url] of Object.entries(data.plots)) {
    if (plotUrls.has(url)) continue;
    const blob = await api(url, "blob");
    plotUrls.set(url, URL.createObjectURL(blob));
    $("plots").append(el("img", { src: plotUrls.get(url), alt: name, title: name }));
  }
}

function itemList(items, onPick) {
  return el("ol", {}, ...items.map((i) => {
    const link = el("a", { class: "item", "data-item": i.item_id }, i.item_id);
    link.addEventListener("click", () => guarded(onPick, $("item-result"))(i.item_id));
    return el("li", {}, link, ` ${num(i.score, 4)}`);
  }));
}

async function lookUpUser(userId) {
  const data = await api(`/console/api/user?user_id=${encodeURIComponent(userId)}&n=10`);
  const rec = data.recommendations, state = data.state, seg = data.segment;
  const summary = el("p", { id: "user-summary" }, `${data.user_id}: source `,
    el("span", { class: "source", id: "user-source" }, rec.source || "none"),
    ", model ", el("span", { id: "user-model" }, rec.model_version || "none"),
    rec.generated_ms ? `, generated ${age(rec.generated_ms, data.now_ms)} ago` : "",
    rec.watermark_ms ? `, newest event ${stamp(rec.watermark_ms)}` : "",
    seg.segment === null ? ", no segment" : `, segment ${seg.segment}`);
  const stateView = state
    ? el("p", {}, `stream state: ${state.events} events (${Object.entries(state.types)
        .map(([k, n]) => `${n} ${k}`).join(", ")}), newest ${state.last_event_ms ?
        stamp(state.last_event_ms) : "–"}; weighs most: ` +
        state.top_items.slice(0, 8).map((i) => `${i.item_id} (${num(i.weight, 2)})`).join(", "))
    : el("p", {}, "no streaming state for this user");
  $("user-result").replaceChildren(summary, itemList(rec.items, lookUpItem), stateView);
}

async function lookUpItem(itemId) {
  $("item-id").value = itemId;
  const data = await api(`/similar/${encodeURIComponent(itemId)}?n=10`);
  const head = el("p", {}, `like ${itemId}: model ${data.model_version || "none"}` +
    (data.items.length ? "" : " (an item this version does not know)"));
  $("item-result").replaceChildren(head, itemList(data.items, lookUpItem));
}

function guarded(task, where) {
  return async (...args) => {
    try {
      await task(...args);
      $("key-error").textContent = "";
    } catch (err) {
      if (err instanceof Unauthorized) askForKey(err.message);
      else where.textContent = err.message;
    }
  };
}

function askForKey(message) {
  $("key-form").hidden = false;
  $("key-error").textContent = message || "";
  $("key").focus();
}

const panels = [
  [guarded(refreshStream, $("keeping-up")), 5000],
  [guarded(refreshDeadLetters, $("dead-caption")), 10000],
  [guarded(refreshModels, $("live-model")), 30000],
  [guarded(refreshSegments, $("segment-caption")), 60000],
];
const refreshAll = () => Promise.all(panels.map(([run]) => run()));

let started = false;
function start() {
  if (started) return refreshAll();
  started = true;
  for (const [run, every] of panels) setInterval(run, every);
  $("window").addEventListener("change", panels[0][0]);
  refreshAll();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("key").value);
  $("key-form").hidden = true;
  start();
});
$("user-form").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(lookUpUser, $("user-result"))($("user-id").value);
});
$("item-form").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(lookUpItem, $("item-result"))($("item-id").value);
});

// Ask for the key first when the server needs one and the tab has none: no refused fetches.
fetch("/console/api/auth").then((r) => r.json()).then(({ key_required }) => {
  if (key_required && !sessionStorage.getItem(KEY)) {
    askForKey("");
  } else {
    start();
  }
});
