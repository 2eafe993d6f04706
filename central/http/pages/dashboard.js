// roomproof dashboard: devices (list + map), live room, session attendance, history charts,
// activity log, CSV import and export. Plain ES modules; every value goes in as text.
import * as api from "/static/dashboard-api.js";
import * as charts from "/static/dashboard-charts.js";

const $ = (id) => document.getElementById(id);
const VIEWS = ["devices", "live-room", "sessions", "history", "activity", "import"];
const STATUS_TONE = {present: "ok", late: "warn", flagged: "bad", absent: "bad", excused: "info", pending: "info"};
const state = {devices: [], rooms: [], alerts: [], courses: [], sessions: new Map(), activity: [], live: new Set(), stopStream: null};
let refreshTimer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}
const badge = (text, tone) => el("span", {class: `badge b-${tone}`}, text);
// Times in a course's own time zone when one is given (a class is at 09:00 where it meets,
// whatever the viewer's browser says), else in the browser's.
const time = (iso, timeZone) => (iso ? new Date(iso).toLocaleString(undefined, {timeZone}) : "–");
const clockTime = (iso, timeZone) => (iso ? new Date(iso).toLocaleTimeString(undefined, {timeZone}) : "–");

function fail(error) {
  // A view this token's role may not read (a teacher's audit log, import): a note, not an error.
  if (error instanceof api.ApiError && error.status === 403) {
    notice(`Not available with this token: ${error.message}`);
    return;
  }
  const box = $("error");
  box.textContent = error instanceof Error ? error.message : String(error);
  box.classList.remove("hidden");
}
function notice(text) {
  $("notice").textContent = text;
  $("notice").classList.remove("hidden");
}
function clearError() { $("error").classList.add("hidden"); $("notice").classList.add("hidden"); }
function guard(fn) {
  return async (...args) => {
    try { clearError(); await fn(...args); } catch (error) { fail(error); }
  };
}
function fill(tbody, rows) { tbody.replaceChildren(...rows); }

// -- devices --------------------------------------------------------------------------------
function deviceState(device) {
  const open = state.alerts.filter((a) => a.site === device.site && a.device === device.device);
  if (!device.enrolled) return {tone: "info", text: "not enrolled", open};
  if (!device.online) return {tone: "bad", text: "offline", open};
  if (device.verdict === "mismatch") return {tone: "bad", text: "displaced", open};
  if (open.length || device.verdict === "weak") return {tone: "warn", text: "online, needs a look", open};
  return {tone: "ok", text: "online", open};
}
function offset(ms) {
  if (ms === null || ms === undefined) return "–";
  return (ms >= 0 ? "+" : "−") + (Math.abs(ms) / 1000).toFixed(1) + " s";
}
async function loadDevices() {
  const [devices, rooms, alerts] = await Promise.all([
    api.get("/api/v1/devices"), api.get("/api/v1/rooms"), api.get("/api/v1/alerts?open=true&limit=1000"),
  ]);
  state.devices = devices.devices;
  state.rooms = rooms.rooms;
  state.alerts = alerts.alerts;
  renderDevices();
  fillRoomSelect();
}
function renderDevices() {
  const tones = {ok: "ok", warn: "warn", bad: "bad", info: "info"};
  fill($("device-table").tBodies[0], state.devices.map((d) => {
    const s = deviceState(d);
    const verdictTone = {verified: "ok", weak: "warn", mismatch: "bad"}[d.verdict] || "info";
    const outbox = d.telemetry && d.telemetry.outbox_depth !== undefined ? d.telemetry.outbox_depth : "–";
    return el("tr", {"data-device": `${d.site}/${d.device}`},
      el("td", {}, d.device), el("td", {}, `${d.site}/${d.room}`),
      el("td", {class: "status"}, badge(s.text, tones[s.tone])),
      el("td", {class: "verdict"}, badge(d.verdict || "none yet", verdictTone)),
      el("td", {}, offset(d.clock_offset_ms)), el("td", {class: "outbox"}, outbox),
      el("td", {class: "last-proof"}, time(d.last_proof_at)),
      el("td", {}, s.open.length ? s.open.map((a) => a.kind).join(", ") : "none"));
  }));
  const order = {bad: 3, warn: 2, ok: 1, info: 0};
  $("map").replaceChildren(charts.roomMap(state.rooms, (room) => {
    const here = state.devices.filter((d) => d.site === room.site && d.room === room.room).map(deviceState);
    if (!here.length) return {tone: "none", text: "no device"};
    const worst = here.reduce((a, b) => (order[b.tone] > order[a.tone] ? b : a));
    return {tone: worst.tone === "info" ? "none" : worst.tone, text: here.map((s) => s.text).join(", ")};
  }));
}
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => loadDevices().catch(fail), 500);
}

// -- live room ------------------------------------------------------------------------------
async function loadRooms() {
  state.rooms = (await api.get("/api/v1/rooms")).rooms;
  fillRoomSelect();
}
function fillRoomSelect() {
  const select = $("live-room-select");
  const chosen = select.value || sessionStorage.getItem("roomproof-live-room") || "";
  select.replaceChildren(el("option", {value: ""}, "Choose a room"),
    ...state.rooms.map((r) => el("option", {value: `${r.site}/${r.room}`}, `${r.name || r.room} (${r.site}/${r.room})`)));
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
}
function liveRow(c) {
  const session = c.session_id ? `#${c.session_id} ${c.session_date}` : "none";
  return el("tr", {"data-student": c.student_id, "data-checkin": c.id},
    el("td", {}, clockTime(c.created_at)), el("td", {class: "student"}, c.student_id),
    el("td", {}, badge(c.status, STATUS_TONE[c.status] || "info")), el("td", {}, c.method),
    el("td", {}, session), el("td", {}, (c.flags || []).join("; ") || "–"));
}
function liveSummary() {
  const rows = [...$("live-table").tBodies[0].rows];
  const counts = {};
  for (const row of rows) {
    const status = row.cells[2].textContent;
    counts[status] = (counts[status] || 0) + 1;
  }
  const parts = Object.entries(counts).map(([k, v]) => `${v} ${k}`);
  $("live-summary").textContent = `${rows.length} checked in today` + (parts.length ? `: ${parts.join(", ")}` : "");
}
async function loadLive() {
  if (!state.rooms.length) await loadRooms();
  const value = $("live-room-select").value;
  state.live = new Set();
  fill($("live-table").tBodies[0], []);
  if (!value) { $("live-summary").textContent = "Choose a room: its check-ins appear here as they happen."; return; }
  sessionStorage.setItem("roomproof-live-room", value);
  const [site, room] = value.split("/");
  const midnight = new Date(); midnight.setHours(0, 0, 0, 0);
  const body = await api.get(`/api/v1/checkins?site=${site}&room=${room}&since=${midnight.getTime()}&limit=1000`);
  const rows = body.checkins.sort((a, b) => b.id - a.id);
  rows.forEach((c) => state.live.add(c.id));
  fill($("live-table").tBodies[0], rows.map(liveRow));
  liveSummary();
}
function liveAdd(c) {
  if ($("live-room-select").value !== `${c.site}/${c.room}` || state.live.has(c.id)) return;
  state.live.add(c.id);
  const row = liveRow(c);
  row.classList.add("fresh");
  $("live-table").tBodies[0].prepend(row);
  liveSummary();
}

// -- session attendance ---------------------------------------------------------------------
async function loadSessions() {
  const body = await api.get("/api/v1/sessions?limit=1000");
  state.sessions = new Map(body.sessions.map((s) => [String(s.id), s]));
  const select = $("session-select");
  const chosen = select.value;
  select.replaceChildren(...body.sessions.map((s) => el("option", {value: s.id},
    `#${s.id} ${s.site}/${s.course} in ${s.room}, ${s.start}–${s.end}, ${s.weekly ? "weekly from" : "on"} ${s.first_date}`)));
  if (chosen) select.value = chosen;
  if (!$("session-date").value) await showAttendance();
}
function sessionZone() {
  const session = state.sessions.get($("session-select").value);
  $("session-zone").textContent = session ? `Dates and times in ${session.timezone}, the course's time zone.` : "";
}
async function showAttendance() {
  const id = $("session-select").value;
  if (!id) return;
  sessionZone();
  // No date chosen: central picks today's meeting in the course's time zone, else the latest
  // past one. The browser's own date may be another day there.
  const chosen = $("session-date").value;
  let body;
  try {
    body = await api.get(`/api/v1/sessions/${id}/attendance` + (chosen ? `?date=${chosen}` : ""));
  } catch (error) {
    const nearest = error instanceof api.ApiError ? error.details.meets_on || [] : [];
    $("session-summary").replaceChildren(...(nearest.length ? ["It meets on: ", ...nearest.map((day) => el("button",
      {type: "button", class: "secondary", onclick: guard(() => { $("session-date").value = day; return showAttendance(); })}, day))] : []));
    fill($("session-table").tBodies[0], []);
    throw error;
  }
  const date = body.occurrence.date, zone = body.occurrence.timezone;
  $("session-date").value = date;
  const summary = Object.entries(body.summary).filter(([, v]) => v).map(([k, v]) => `${v} ${k}`).join(", ");
  $("session-summary").replaceChildren(
    `${body.occurrence.course} in ${body.occurrence.room}, ${time(body.occurrence.starts_at, zone)} (${zone}): ${summary || "nobody yet"} `,
    el("button", {type: "button", class: "secondary", onclick: guard(() => api.download(
      `/api/v1/exports/attendance.csv?session_id=${id}&date=${date}`, `attendance-${id}-${date}.csv`))}, "Download CSV"));
  fill($("session-table").tBodies[0], body.attendance.map((row) => el("tr", {"data-student": row.student_id},
    el("td", {}, row.student_id + (row.on_roster ? "" : " (not on roster)")),
    el("td", {}, badge(row.status, STATUS_TONE[row.status] || "info"), row.override ? ` set by ${row.override.set_by}: ${row.override.note}` : ""),
    el("td", {}, clockTime(row.checked_in_at, zone)), el("td", {}, clockTime(row.checked_out_at, zone)),
    el("td", {}, row.flags.join("; ") || "–"),
    el("td", {}, row.checkin_id ? el("button", {type: "button", class: "secondary", onclick: guard(() => api.download(
      `/api/v1/checkins/${row.checkin_id}/evidence`, `roomproof-record-${row.checkin_id}.json`))}, "Evidence") : "–"))));
}

// -- history --------------------------------------------------------------------------------
async function loadCourses() {
  const body = await api.get("/api/v1/courses");
  state.courses = body.courses;
  const select = $("history-course");
  const chosen = select.value;
  select.replaceChildren(...state.courses.map((c) => el("option", {value: `${c.site}/${c.course}`}, `${c.name || c.course} (${c.site}/${c.course})`)));
  if (chosen) select.value = chosen;
}
function drawHistory(title, rateLabel, rates, lateLabel, lates, rows) {
  $("history-title").textContent = title;
  $("chart-rate").replaceChildren(charts.rateChart(rateLabel, rates));
  $("chart-late").replaceChildren(charts.barChart(lateLabel, lates));
  $("chart-rate").nextElementSibling.textContent = rateLabel;
  $("chart-late").nextElementSibling.textContent = lateLabel;
  fill($("history-table").tBodies[0], rows);
}
async function courseHistory() {
  const value = $("history-course").value;
  if (!value) return;
  const body = await api.get(`/api/v1/courses/${value}/history`);
  const items = body.occurrences;
  drawHistory(`Course ${value}`, "Attendance rate per meeting",
    items.map((o) => ({label: o.date.slice(5), value: o.rate, title: `session #${o.session_id}`})),
    "Late arrivals per meeting", items.map((o) => ({label: o.date.slice(5), value: o.late})),
    items.map((o) => el("tr", {}, el("td", {}, o.date), el("td", {}, `#${o.session_id}`), el("td", {}, o.room),
      el("td", {}, Object.entries(o.summary).filter(([, v]) => v).map(([k, v]) => `${v} ${k}`).join(", ") || "–"))));
}
async function studentHistory() {
  let value = $("history-student").value.trim();
  if (!value) return;
  if (!value.includes("/")) {
    const site = ($("history-course").value || (state.rooms[0] && `${state.rooms[0].site}/`) || "/").split("/")[0];
    value = `${site}/${value}`;
  }
  const body = await api.get(`/api/v1/students/${value}/attendance?limit=1000`);
  let due = 0, attended = 0;
  const rates = [], lates = [];
  for (const row of body.attendance) {
    if (!["pending", "excused"].includes(row.status)) {
      due += 1;
      if (["present", "late", "flagged"].includes(row.status)) attended += 1;
    }
    rates.push({label: row.date.slice(5), value: due ? attended / due : null, title: row.status});
    lates.push({label: row.date.slice(5), value: row.status === "late" ? 1 : 0});
  }
  drawHistory(`Student ${value}`, "Attendance rate so far, after each meeting", rates, "Late arrivals", lates,
    body.attendance.map((row) => el("tr", {}, el("td", {}, row.date), el("td", {}, `#${row.session_id} ${row.course}`),
      el("td", {}, row.room), el("td", {}, badge(row.status, STATUS_TONE[row.status] || "info")))));
}

// -- activity -------------------------------------------------------------------------------
async function loadActivity() {
  const source = $("activity-source").value;
  let rows = [];
  if (source === "audit") {
    let body;
    try {
      body = await api.get("/api/v1/audit?limit=1000");
    } catch (error) {
      if (!(error instanceof api.ApiError && error.status === 403)) throw error;
      // A teacher's token: no audit log, but the check-ins of its courses.
      const option = $("activity-source").querySelector('option[value="audit"]');
      option.disabled = true;
      option.textContent = "Admin actions (audit): admins and auditors only";
      $("activity-source").value = "checkins";
      await loadActivity();
      notice("The audit log is for admin and auditor tokens: showing check-ins instead.");
      return;
    }
    rows = body.audit.map((e) => ({at: e.at, kind: e.action, who: `${e.actor} → ${e.target}`, detail: e.detail || ""}));
  } else if (source === "checkins") {
    const since = Date.now() - 7 * 86400_000;
    const body = await api.get(`/api/v1/checkins?since=${since}&limit=1000`);
    rows = body.checkins.reverse().map((c) => ({at: c.created_at, kind: c.status, who: `${c.student_id} in ${c.site}/${c.room}`,
      detail: [c.method, ...(c.flags || [])].join("; ")}));
  } else {
    const body = await api.get("/api/v1/rejections");
    rows = body.recent.map((r) => ({at: r.at, kind: r.reason, who: r.topic, detail: `${r.size} bytes`}));
  }
  state.activity = rows;
  const kinds = [...new Set(rows.map((r) => r.kind))].sort();
  const select = $("activity-kind"), chosen = select.value;
  select.replaceChildren(el("option", {value: ""}, "All"), ...kinds.map((k) => el("option", {value: k}, k)));
  if (kinds.includes(chosen)) select.value = chosen;
  renderActivity();
}
function renderActivity() {
  const kind = $("activity-kind").value, needle = $("activity-search").value.trim().toLowerCase();
  const shown = state.activity.filter((r) => (!kind || r.kind === kind)
    && (!needle || `${r.kind} ${r.who} ${r.detail}`.toLowerCase().includes(needle)));
  $("activity-count").textContent = `${shown.length} of ${state.activity.length} entries`;
  fill($("activity-table").tBodies[0], shown.map((r) => el("tr", {}, el("td", {}, time(r.at)),
    el("td", {}, r.kind), el("td", {}, r.who), el("td", {}, r.detail))));
}

// -- import and export ----------------------------------------------------------------------
let checked = null;  // {kind, text} of a dry run without row errors
async function runImport(dryRun) {
  const file = $("import-file").files[0];
  if (!file) throw new Error("Choose a CSV file first.");
  // Apply sends exactly the file the dry run checked.
  const {kind, text} = dryRun ? {kind: $("import-kind").value, text: await file.text()} : checked;
  const body = await api.send("POST", `/api/v1/imports/${kind}?dry_run=${dryRun}`, text, "text/csv");
  const verb = body.dry_run ? "Dry run" : body.applied ? "Applied" : "Not applied";
  $("import-result").textContent = `${verb}: ${body.rows} rows, ${body.created} new, ${body.updated} updated, `
    + `${body.unchanged} unchanged`
    + (body.pin_will_be_set ? `, PIN will be set for ${body.pin_will_be_set}` : "")
    + `; row errors: ${body.errors.length}.`;
  $("import-result").dataset.outcome = body.errors.length ? "errors" : body.dry_run ? "checked" : "applied";
  const table = $("import-errors");
  table.classList.toggle("hidden", !body.errors.length);
  fill(table.tBodies[0], body.errors.map((e) => el("tr", {}, el("td", {}, e.row), el("td", {}, e.field || "–"), el("td", {}, e.message))));
  checked = body.dry_run && !body.errors.length ? {kind, text} : null;
  $("import-apply").disabled = !checked;
}
async function runExport(format) {
  const scope = $("export-scope").value, site = $("export-site").value.trim();
  const value = $("export-value").value.trim(), date = $("export-date").value;
  // A session without a date: central exports today's meeting in the course's time zone, else
  // the latest past one (the file name says which).
  const query = scope === "course" ? {site, course: value}
    : scope === "session" ? {session_id: value, ...(date ? {date} : {})} : {site, student_id: value};
  const name = await api.download(`/api/v1/exports/attendance.${format}?${new URLSearchParams(query)}`, `attendance.${format}`);
  $("export-result").textContent = `Downloaded ${name}.`;
}

// -- wiring ---------------------------------------------------------------------------------
const loaders = {
  devices: loadDevices, "live-room": loadLive, sessions: loadSessions,
  history: loadCourses, activity: loadActivity, import: async () => {},
};
function route() {
  const view = VIEWS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "devices";
  for (const id of VIEWS) $(id).classList.toggle("hidden", id !== view);
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === "#" + view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.body.dataset.view = view;
  if (api.token()) guard(loaders[view])();
}
function onEvent(kind, data) {
  if (kind === "checkin") liveAdd(data);
  if (kind === "proof") {
    const device = state.devices.find((d) => d.site === data.site && d.device === data.device);
    if (device) {
      device.verdict = data.verdict;
      device.last_seq = data.seq;
      device.last_proof_at = new Date(data.received_at).toISOString();
      device.online = true;
      renderDevices();
    }
  }
  if (kind === "device" || kind === "alert") scheduleRefresh();
}
function connect() {
  if (state.stopStream) state.stopStream();
  state.stopStream = null;
  const live = $("live");
  $("token").placeholder = api.token() ? "token in use (this tab only)" : "rp_…";
  if (!api.token()) {
    live.textContent = "Not connected";
    live.classList.remove("on");
    fail("Paste an admin, teacher or auditor token above to start.");
    route();
    return;
  }
  state.stopStream = api.stream(onEvent, (on, error) => {
    live.textContent = on ? "Live" : error ? `Not live: ${error.message}` : "Reconnecting…";
    live.classList.toggle("on", on);
    if (on) document.body.dataset.live = "on"; else delete document.body.dataset.live;
  });
  route();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  api.setToken($("token").value.trim());
  $("token").value = "";
  clearError();
  connect();
});
$("forget").addEventListener("click", () => { api.setToken(""); connect(); });
$("live-room-select").addEventListener("change", guard(loadLive));
$("session-form").addEventListener("submit", (event) => { event.preventDefault(); guard(showAttendance)(); });
// Another session: its own default date (today's meeting in its time zone, or its latest).
$("session-select").addEventListener("change", () => { $("session-date").value = ""; guard(showAttendance)(); });
$("course-history-form").addEventListener("submit", (event) => { event.preventDefault(); guard(courseHistory)(); });
$("student-history-form").addEventListener("submit", (event) => { event.preventDefault(); guard(studentHistory)(); });
$("activity-source").addEventListener("change", guard(loadActivity));
$("activity-kind").addEventListener("change", renderActivity);
$("activity-search").addEventListener("input", renderActivity);
$("import-form").addEventListener("submit", (event) => { event.preventDefault(); guard(() => runImport(true))(); });
$("import-file").addEventListener("change", () => { checked = null; $("import-apply").disabled = true; });
$("import-kind").addEventListener("change", () => { checked = null; $("import-apply").disabled = true; });
$("import-apply").addEventListener("click", guard(() => runImport(false)));
$("export-form").addEventListener("submit", (event) => {
  event.preventDefault();
  guard(() => runExport(event.submitter && event.submitter.value === "pdf" ? "pdf" : "csv"))();
});
window.addEventListener("hashchange", route);
setInterval(() => { if (api.token() && document.body.dataset.view === "devices") loadDevices().catch(fail); }, 30_000);
connect();
