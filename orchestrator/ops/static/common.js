"use strict";
// Shared helpers for the status pages. Data is only ever inserted with textContent.

const POLL_MS = 2000;

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function parseTime(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

function fmtDuration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m " + (s % 60) + "s";
  const h = Math.floor(m / 60);
  if (h < 48) return h + "h " + (m % 60) + "m";
  return Math.floor(h / 24) + "d " + (h % 24) + "h";
}

function fmtSince(iso) {
  const t = parseTime(iso);
  if (t === null) return "—";
  return fmtDuration(Date.now() - t) + " ago";
}

function fmtLocal(iso) {
  const t = parseTime(iso);
  return t === null ? "—" : new Date(t).toLocaleString();
}

function fmtCountdown(iso) {
  const t = parseTime(iso);
  if (t === null) return "—";
  const left = t - Date.now();
  return left <= 0 ? "due" : "in " + fmtDuration(left);
}

function fmtSla(sla) {
  if (!sla || sla.percent === null || sla.percent === undefined) return "—";
  return sla.percent.toFixed(1) + "%";
}

function fmtWindow(room) {
  const w = room.next_window;
  if (!w) return "—";
  if (typeof w === "string") return fmtLocal(w);
  const start = fmtLocal(w.start);
  return w.end ? start + " → " + fmtLocal(w.end) : start;
}

function stateBadge(state) {
  const s = String(state || "UNKNOWN");
  return el("span", { class: "state state-" + s.toLowerCase() }, s);
}

function setConn(ok, text) {
  const node = document.getElementById("conn");
  node.textContent = text;
  node.className = "conn " + (ok ? "conn-ok" : "conn-bad");
}

async function fetchJSON(url) {
  const resp = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  if (!resp.ok) throw new Error(url + " → HTTP " + resp.status);
  return resp.json();
}

// Poll `load` every POLL_MS; a failure is shown, never thrown out of the timer.
function poll(load) {
  let busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    try {
      await load();
      setConn(true, "updated " + new Date().toLocaleTimeString());
    } catch (err) {
      setConn(false, "update failed: " + err.message);
    } finally {
      busy = false;
    }
  };
  tick();
  setInterval(tick, POLL_MS);
}
