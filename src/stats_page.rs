//! The live stats page (`GET /stats` on the admin endpoint): one self-contained HTML document
//! whose script fetches `/stats.json` (the metric table, [`crate::metrics::Table::json`]) every
//! `?refresh=` seconds (2 by default) and lays it out as HAProxy's stats page does: the process,
//! then one row per shard, per backend and per server, each metric a column, counters with their
//! rate per second since the previous refresh. Every cell carries `data-row` (`shard/backend/
//! server`), `data-col` (the series and its other labels; the same keys as the CSV export) and
//! `data-value` (the exact value; the text is rounded), so a test reads the page as the table. No external resources: it works on an isolated admin
//! network.

/// The page.
pub const PAGE: &str = r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>coreplex stats</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:13px/1.35 system-ui,sans-serif;margin:16px;color:#1d2330;background:#f6f7f9}
h1{font-size:18px;margin:0 0 4px} h2{font-size:15px;margin:18px 0 6px}
#status{color:#5b6475;margin-bottom:8px} .err{color:#b3261e}
.wrap{overflow-x:auto;background:#fff;border:1px solid #d9dde5;border-radius:6px}
table{border-collapse:collapse;width:max-content;min-width:100%}
th,td{padding:3px 8px;border-bottom:1px solid #eceff4;text-align:right;white-space:nowrap}
th{background:#eef1f6;position:sticky;top:0;font-weight:600;font-size:12px}
td.k,th.k{text-align:left;font-weight:600} .rate{color:#3b6fd8;font-size:11px;margin-left:4px}
.proc td:first-child{text-align:left}
</style></head><body>
<h1>coreplex</h1><div id="status">loading&hellip;</div>
<h2>Process</h2><div class="wrap"><table id="summary"></table></div>
<h2>Shards</h2><div class="wrap"><table id="shards"></table></div>
<h2>Backends</h2><div class="wrap"><table id="backends"></table></div>
<h2>Servers</h2><div class="wrap"><table id="servers"></table></div>
<details><summary><h2 style="display:inline">Every process series</h2></summary>
<div class="wrap"><table class="proc" id="process"></table></div></details>
<script>
"use strict";
const ROW = ["shard", "backend", "server"];
const refresh = Math.max(0.5, Number(new URLSearchParams(location.search).get("refresh") || 2));
let prev = null, prevAt = 0;
// The process series the summary row shows (each with all its label variants).
const SUMMARY = ["coreplex_connections_current", "coreplex_connections_accepted_total",
  "coreplex_requests_total", "coreplex_request_duration_seconds", "coreplex_tls_handshakes_total",
  "coreplex_h2_connections_current", "coreplex_h2_streams_current", "coreplex_websocket_current",
  "coreplex_tunnels_current", "coreplex_proxy_protocol_total", "coreplex_bytes_received_total",
  "coreplex_bytes_sent_total"];
const inSummary = c => SUMMARY.some(p => c === p || c.startsWith(p + "{"));

function column(s) {
  const rest = Object.entries(s.labels).filter(([k]) => !ROW.includes(k)).map(([k, v]) => k + "=" + v);
  return rest.length ? s.name + "{" + rest.join(",") + "}" : s.name;
}

// Rows keyed "shard/backend/server", each a map column -> {value, counter}.
function pivot(j) {
  const rows = new Map(), cols = [], seen = new Set();
  for (const f of j.families) {
    for (const s of f.samples) {
      const key = ROW.map(l => s.labels[l] || "").join("/");
      const c = column(s);
      if (!seen.has(c)) { seen.add(c); cols.push(c); }
      if (!rows.has(key)) rows.set(key, new Map());
      rows.get(key).set(c, {value: s.value, counter: f.type === "counter", help: f.help});
    }
  }
  return {rows, cols};
}

function fmt(v) {
  if (v === null || v === undefined) return "";
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(4);
}

function short(c) { return c.replace(/^coreplex_(backend_)?/, ""); }

function cell(key, c, cur, old, secs) {
  const td = document.createElement("td");
  td.dataset.row = key; td.dataset.col = c;
  if (!cur) return td;
  td.dataset.value = String(cur.value);
  td.textContent = fmt(cur.value);
  td.title = cur.help;
  if (cur.counter && old && secs > 0 && typeof cur.value === "number" && typeof old.value === "number") {
    const r = document.createElement("span");
    r.className = "rate"; r.textContent = fmt((cur.value - old.value) / secs) + "/s";
    td.appendChild(r);
  }
  return td;
}

function table(id, keys, cols, p, o, secs, keyCols) {
  const t = document.getElementById(id);
  t.textContent = "";
  const used = cols.filter(c => keys.some(k => p.rows.get(k).has(c)));
  if (!keys.length) { t.insertRow().insertCell().textContent = "none"; return; }
  const head = t.insertRow();
  for (const k of keyCols) { const th = document.createElement("th"); th.className = "k"; th.textContent = k; head.appendChild(th); }
  for (const c of used) { const th = document.createElement("th"); th.textContent = short(c); th.title = c; head.appendChild(th); }
  for (const key of keys) {
    const tr = t.insertRow();
    const parts = key.split("/");
    keyCols.forEach(k => { const td = tr.insertCell(); td.className = "k"; td.textContent = parts[ROW.indexOf(k)]; });
    const old = o && o.rows.get(key);
    for (const c of used) tr.appendChild(cell(key, c, p.rows.get(key).get(c), old && old.get(c), secs));
  }
}

function render(j, at) {
  const p = pivot(j), o = prev && pivot(prev), secs = prev ? (at - prevAt) / 1000 : 0;
  const keys = [...p.rows.keys()];
  // The process: one row per series (too many columns for one row).
  const t = document.getElementById("process");
  t.textContent = "";
  const h = t.insertRow();
  for (const x of ["series", "value"]) { const th = document.createElement("th"); th.textContent = x; h.appendChild(th); }
  const proc = p.rows.get("//") || new Map();
  const oldProc = o && o.rows.get("//");
  for (const [c, cur] of proc) {
    const tr = t.insertRow();
    const name = tr.insertCell(); name.textContent = short(c); name.title = cur.help;
    tr.appendChild(cell("//", c, cur, oldProc && oldProc.get(c), secs));
  }
  table("summary", p.rows.has("//") ? ["//"] : [], p.cols.filter(inSummary), p, o, secs, []);
  table("shards", keys.filter(k => k.split("/")[0] !== ""), p.cols, p, o, secs, ["shard"]);
  table("backends", keys.filter(k => { const [s, b, v] = k.split("/"); return !s && b && !v; }), p.cols, p, o, secs, ["backend"]);
  table("servers", keys.filter(k => { const [s, b, v] = k.split("/"); return !s && b && v; }), p.cols, p, o, secs, ["backend", "server"]);
  document.getElementById("status").textContent =
    "updated " + new Date(at).toLocaleTimeString() + ", every " + refresh + " s \u00b7 export: stats.json, stats.csv, metrics";
  document.body.dataset.loaded = "1";
}

async function tick() {
  try {
    const r = await fetch("stats.json", {cache: "no-store"});
    if (!r.ok) throw new Error(r.status + " " + r.statusText);
    const j = await r.json(), at = Date.now();
    render(j, at);
    prev = j; prevAt = at;
  } catch (e) {
    const s = document.getElementById("status");
    s.textContent = "cannot load stats.json: " + e.message; s.className = "err";
  }
  setTimeout(tick, refresh * 1000);
}
tick();
</script></body></html>
"##;
