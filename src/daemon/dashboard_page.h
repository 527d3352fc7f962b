// The dashboard's one page (daemon/dashboard.h): plain HTML, CSS and
// JavaScript, no framework and nothing fetched from elsewhere. It polls
// /api/state every 2 s and /api/history every 5 s, draws accuracy and loss
// against time as SVG, and sends changes with the token from its address's
// fragment.
#pragma once

namespace mycel {

inline constexpr char kDashboardPage[] = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mycel</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 60em; }
h1 { font-size: 1.3em; margin: 0 0 .2em; } h2 { font-size: 1.05em; margin: 1.4em 0 .4em; }
.muted { color: #777; } .bad { color: #b00; } .ok { color: #070; }
table { border-collapse: collapse; width: 100%; } td, th { text-align: left; padding: .2em .6em .2em 0; border-bottom: 1px solid #eee; }
th { font-weight: 600; } button { font: inherit; padding: .25em .9em; margin-right: .5em; }
svg { border: 1px solid #ddd; background: #fcfcfc; } .legend span { margin-right: 1.2em; }
#message { min-height: 1.4em; }
</style>
</head>
<body>
<h1>mycel <span id="version" class="muted"></span></h1>
<div><b id="state">…</b> <span id="reason" class="muted"></span></div>
<div id="numbers" class="muted"></div>
<p><button id="pause">Pause</button><button id="resume">Resume</button><span id="message"></span></p>
<p id="notoken" class="bad" hidden>This page was opened without its token: it shows, but cannot change anything. Open the address <code>mycel status</code> prints (it ends in #token).</p>

<h2>Accuracy and loss</h2>
<div class="legend"><span style="color:#1f6feb">■ validation accuracy</span><span style="color:#d1242f">■ validation loss (scaled to its largest)</span><span id="plotinfo" class="muted"></span></div>
<svg id="plot" width="640" height="240" viewBox="0 0 640 240" role="img" aria-label="validation accuracy and loss against time">
  <line x1="40" y1="10" x2="40" y2="210" stroke="#999"/><line x1="40" y1="210" x2="630" y2="210" stroke="#999"/>
  <text x="4" y="14" font-size="11">1.0</text><text x="4" y="112" font-size="11">0.5</text><text x="4" y="214" font-size="11">0</text>
  <text id="t0" x="40" y="228" font-size="11"></text><text id="t1" x="630" y="228" font-size="11" text-anchor="end"></text>
  <polyline id="acc" fill="none" stroke="#1f6feb" stroke-width="1.6" points=""/>
  <polyline id="loss" fill="none" stroke="#d1242f" stroke-width="1.2" points=""/>
</svg>

<h2>Peers</h2>
<table><thead><tr><th>name</th><th>where</th><th>state</th><th>last exchange</th><th>sent</th><th>received</th><th>trust</th><th>refusals</th></tr></thead>
<tbody id="peers"></tbody></table>
<div id="totals" class="muted"></div>

<h2>Pending peers</h2>
<table><thead><tr><th>name</th><th>key fingerprint</th><th>address</th><th>last seen</th><th></th></tr></thead>
<tbody id="pending"></tbody></table>
<p class="muted">Check a fingerprint with its owner (<code>mycel id</code> on their laptop) before you accept it.</p>
<p id="discovery" hidden></p>

<script>
"use strict";
// The token comes in the address's fragment (`mycel status` prints it; a
// fragment is never sent to a server), is kept for this tab, and leaves the
// address bar.
let TOKEN = "";
function takeToken() {
  if (location.hash.length > 1) {
    sessionStorage.setItem("mycel-token", location.hash.slice(1));
    history.replaceState(null, "", location.pathname);
  }
  TOKEN = sessionStorage.getItem("mycel-token") || "";
  document.getElementById("notoken").hidden = TOKEN !== "";
}
window.addEventListener("hashchange", takeToken);
const $ = (id) => document.getElementById(id);
const num = (v) => (v === undefined || v === null || v === "NaN") ? NaN : Number(v);
const fmt = (v, d) => isNaN(v) ? "–" : v.toFixed(d);
function bytes(b) {
  b = num(b);
  if (b < 1024) return b + " B";
  const u = ["KiB", "MiB", "GiB", "TiB"]; let i = -1;
  do { b /= 1024; i++; } while (b >= 1024 && i < u.length - 1);
  return b.toFixed(1) + " " + u[i];
}
function ago(unix) {
  unix = num(unix);
  if (!unix) return "never";
  const s = Math.max(0, Math.round(Date.now() / 1000 - unix));
  return s < 120 ? s + " s ago" : s < 7200 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
}
function cell(row, text, cls) { const td = row.insertCell(); td.textContent = text; if (cls) td.className = cls; return td; }
function say(text, bad) { $("message").textContent = text; $("message").className = bad ? "bad" : "ok"; }

async function post(path) {
  const r = await fetch(path, { method: "POST", headers: { "X-Mycel-Token": TOKEN } });
  const text = await r.text();
  say(r.ok ? "" : text.trim(), !r.ok);
  await refresh();
  return r.ok ? text : null;
}
$("pause").onclick = () => post("/api/pause");
$("resume").onclick = () => post("/api/resume");

async function refresh() {
  let s;
  try { s = await (await fetch("/api/state")).json(); } catch (e) { $("state").textContent = "myceld does not answer"; return; }
  const st = s.status;
  $("version").textContent = st.version ? "myceld " + st.version : "";
  $("state").textContent = st.state;
  $("state").dataset.state = st.state;
  $("reason").textContent = st.reason ? "(" + st.reason + ")" : "";
  $("numbers").textContent = "steps " + st.steps + " · " + fmt(num(st.steps_per_s), 1) + " steps/s · learning rate " +
      fmt(num(st.learning_rate), 5) + " · validation accuracy " + fmt(num(st.val_accuracy), 4) + " · loss " +
      fmt(num(st.val_loss), 4) + " · examples " + (num(st.examples_train) + num(st.examples_val));
  const peers = s.peers ? (s.peers.peers || []) : [];
  const tb = $("peers"); tb.innerHTML = "";
  if (peers.length === 0) cell(tb.insertRow(), "no neighbours pinned", "muted").colSpan = 8;
  for (const p of peers) {
    const row = tb.insertRow();
    cell(row, p.name);
    cell(row, p.dials_in ? "(dials in)" : p.address);
    cell(row, p.state + (p.quarantine ? " — quarantined: " + p.quarantine : ""), p.state === "connected" ? "ok" : (p.state === "never" ? "muted" : "bad"));
    cell(row, ago(p.last_success_unix));
    cell(row, bytes(p.bytes_sent)); cell(row, bytes(p.bytes_received));
    const trust = (p.trust || []).map(t => t.layer + " " + num(t.trust).toFixed(2)).join(", ");
    cell(row, trust || "–");
    const ref = Object.entries(p.refusals || {}).map(([k, v]) => k + "=" + v).join(", ");
    cell(row, ref || (p.last_error ? p.last_error.slice(0, 80) : "–"));
  }
  if (s.peers) $("totals").textContent = "rounds " + s.peers.rounds + " · sent " + bytes(s.peers.bytes_sent) + " · received " + bytes(s.peers.bytes_received);
  // LAN discovery ([node] discover): announced, or why not.
  $("discovery").hidden = !st.discovery;
  $("discovery").textContent = st.discovery ? "LAN discovery: " + st.discovery : "";
  $("discovery").className = st.discovery_announced ? "muted" : "bad";
  const pend = $("pending"); pend.innerHTML = "";
  const pending = s.peers ? (s.peers.pending || []) : [];
  if (pending.length === 0) cell(pend.insertRow(), "no one is waiting", "muted").colSpan = 5;
  for (const p of pending) {
    const row = pend.insertRow();
    cell(row, p.name); cell(row, p.key_fingerprint);
    cell(row, (p.dials_in ? "(dials out)" : (p.address || "(does not listen)")) + (p.discovered ? " (on the LAN)" : ""));
    cell(row, ago(p.last_seen_unix));
    const b = document.createElement("button");
    b.textContent = "Accept"; b.className = "accept"; b.dataset.fingerprint = p.key_fingerprint;
    b.onclick = async () => { const done = await post("/api/accept?who=" + encodeURIComponent(p.key_fingerprint)); if (done) say(done.trim(), false); };
    row.insertCell().appendChild(b);
  }
}

async function plot() {
  let h;
  try { h = await (await fetch("/api/history")).json(); } catch (e) { return; }
  const passes = (h.passes || []).filter(p => !isNaN(num(p.val_accuracy)));
  $("plotinfo").textContent = passes.length + " validation passes";
  if (passes.length === 0) { $("acc").setAttribute("points", ""); $("loss").setAttribute("points", ""); return; }
  const t0 = num(passes[0].unix_s), t1 = Math.max(t0 + 1, num(passes[passes.length - 1].unix_s));
  const maxLoss = Math.max(...passes.map(p => num(p.val_loss)).filter(v => !isNaN(v)), 1e-9);
  const x = (t) => (40 + (t - t0) / (t1 - t0) * 590).toFixed(1);
  const y = (v) => (210 - Math.min(1, Math.max(0, v)) * 200).toFixed(1);
  $("acc").setAttribute("points", passes.map(p => x(num(p.unix_s)) + "," + y(num(p.val_accuracy))).join(" "));
  $("loss").setAttribute("points", passes.filter(p => !isNaN(num(p.val_loss))).map(p => x(num(p.unix_s)) + "," + y(num(p.val_loss) / maxLoss)).join(" "));
  $("t0").textContent = new Date(t0 * 1000).toLocaleTimeString();
  $("t1").textContent = new Date(t1 * 1000).toLocaleTimeString();
}

takeToken();
refresh(); plot();
setInterval(refresh, 2000);
setInterval(plot, 5000);
</script>
</body>
</html>
)HTML";

}  // namespace mycel
