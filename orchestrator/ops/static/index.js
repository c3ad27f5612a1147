"use strict";
/* global el, fmtSince, fmtCountdown, fmtSla, fmtWindow, stateBadge, fetchJSON, poll */

let latest = [];

function row(room) {
  const tr = el("tr", { class: "room", "data-room-id": room.room_id, "data-state": room.state });
  const link = el("a", { href: "/ui/rooms/" + encodeURIComponent(room.room_id) }, room.room_id);
  const name = el("td");
  name.appendChild(link);
  if (room.name) name.appendChild(el("span", { class: "room-name" }, room.name));
  const state = el("td");
  state.appendChild(stateBadge(room.state));
  if (room.alert) state.appendChild(el("span", { class: "alert", title: room.alert }, "⚠"));
  tr.append(
    name,
    state,
    el("td", { class: "mono" }, room.job_id || "—"),
    el("td", { title: room.since || "" }, fmtSince(room.since)),
    el("td", { class: "num" }, room.attempt ?? 0),
    el("td", { class: "countdown", "data-at": room.next_retry_at || "" }, fmtCountdown(room.next_retry_at)),
    el("td", { class: "error" }, room.last_error || ""),
    el("td", { class: "num" }, fmtSla(room.sla_today)),
    el("td", {}, fmtWindow(room)),
  );
  return tr;
}

function render() {
  const body = document.querySelector("#rooms tbody");
  body.replaceChildren(...latest.map(row));
  document.getElementById("empty").hidden = latest.length > 0;
  const counts = {};
  for (const r of latest) counts[r.state] = (counts[r.state] || 0) + 1;
  const summary = document.getElementById("summary");
  summary.replaceChildren(
    ...Object.keys(counts).sort().map((s) => {
      const badge = stateBadge(s);
      badge.textContent = s + " " + counts[s];
      return badge;
    }),
  );
}

function tickCountdowns() {
  for (const td of document.querySelectorAll("td.countdown")) {
    td.textContent = fmtCountdown(td.getAttribute("data-at"));
  }
}

poll(async () => {
  const data = await fetchJSON("/rooms");
  latest = data.rooms || [];
  render();
});
setInterval(tickCountdowns, 1000);
