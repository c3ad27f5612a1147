"use strict";
/* global el, fmtSince, fmtLocal, fmtCountdown, fmtSla, fmtWindow, stateBadge, fetchJSON, poll */

const SVG = "http://www.w3.org/2000/svg";
const roomId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderFacts(room) {
  document.getElementById("room-name").textContent = room.name || "";
  const facts = [
    ["Order", room.order || "—"],
    ["Job", room.job_id || "—"],
    ["Since", room.since ? fmtLocal(room.since) + " (" + fmtSince(room.since) + ")" : "—"],
    ["Attempt", room.attempt ?? 0],
    ["Next retry", fmtCountdown(room.next_retry_at)],
    ["Last error", room.last_error || "—"],
    ["Alert", room.alert || "—"],
    ["SLA today", fmtSla(room.sla_today)],
    ["Next window", fmtWindow(room)],
  ];
  const dl = document.getElementById("facts");
  dl.replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const badge = stateBadge(room.state);
  badge.id = "state";
  document.getElementById("state").replaceWith(badge);
}

function renderTimeline(tl) {
  const box = document.getElementById("timeline");
  if (!tl) {
    box.replaceChildren(el("p", { class: "empty" }, "History unavailable (store not reachable)."));
    return;
  }
  const t0 = Date.parse(tl.start);
  const t1 = Date.parse(tl.end);
  const span = Math.max(1, t1 - t0);
  const W = 1000;
  const root = svg("svg", { viewBox: "0 0 " + W + " 70", class: "timeline-svg", role: "img" });
  root.appendChild(svg("title", {}, "Room " + roomId + ": last 24 hours"));
  root.appendChild(svg("text", { x: 0, y: 10, class: "tl-label" }, "scheduled"));
  root.appendChild(svg("text", { x: 0, y: 34, class: "tl-label" }, "status"));
  for (const seg of tl.segments) {
    const x = ((Date.parse(seg.start) - t0) / span) * W;
    const w = Math.max(0.5, ((Date.parse(seg.end) - Date.parse(seg.start)) / span) * W);
    const label = seg.kind === "nodata" ? "no data (before the daemon's first record)" : seg.state;
    const tip = label + ": " + fmtLocal(seg.start) + " → " + fmtLocal(seg.end);
    if (seg.scheduled) {
      const s = svg("rect", { x: x, y: 13, width: w, height: 6, class: "scheduled" });
      s.appendChild(svg("title", {}, "scheduled " + tip));
      root.appendChild(s);
    }
    const r = svg("rect", { x: x, y: 37, width: w, height: 18, class: "seg kind-" + seg.kind });
    r.appendChild(svg("title", {}, tip));
    root.appendChild(r);
  }
  for (let h = 0; h <= 24; h += 6) {
    const x = (h / 24) * W;
    root.appendChild(svg("line", { x1: x, x2: x, y1: 35, y2: 60, class: "tick" }));
    const label = h === 24 ? "now" : "-" + (24 - h) + "h";
    root.appendChild(svg("text", { x: Math.min(x, W - 20), y: 69, class: "tl-label" }, label));
  }
  box.replaceChildren(root);
}

function renderTransitions(list) {
  const body = document.querySelector("#transitions tbody");
  const rows = (list || []).map((t) => {
    const tr = el("tr", { class: "transition" });
    const from = el("td");
    from.appendChild(stateBadge(t.from));
    const to = el("td");
    to.appendChild(stateBadge(t.to));
    tr.append(
      el("td", { title: t.at }, fmtLocal(t.at)),
      from,
      to,
      el("td", { class: "why", title: t.event + " (" + (t.cause || "-") + ")" }, t.why || t.cause || ""),
    );
    return tr;
  });
  body.replaceChildren(...rows);
  document.getElementById("no-history").hidden = rows.length > 0;
}

document.getElementById("room-id").textContent = roomId;
document.title = "liveorch — " + roomId;

poll(async () => {
  const room = await fetchJSON("/rooms/" + encodeURIComponent(roomId));
  renderFacts(room);
  renderTimeline(room.timeline);
  renderTransitions(room.transitions);
});
