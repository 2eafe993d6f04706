// Inline SVG charts and the room map: no library, readable labels, a <title> per mark.

const NS = "http://www.w3.org/2000/svg";
const W = 560, H = 220, PAD = {left: 40, right: 28, top: 12, bottom: 36};

export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children) node.append(child);
  return node;
}

function titled(node, text) { node.append(svg("title", {}, text)); return node; }

function frame(label, max, format) {
  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label});
  const plotH = H - PAD.top - PAD.bottom;
  for (const fraction of [0, 0.5, 1]) {
    const y = PAD.top + plotH * (1 - fraction);
    root.append(svg("line", {x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, stroke: "#d1d5db"}));
    root.append(svg("text", {x: PAD.left - 6, y: y + 4, "text-anchor": "end"}, format(max * fraction)));
  }
  return root;
}

function xLabels(root, items, xOf) {
  const every = Math.max(1, Math.ceil(items.length / 8));
  items.forEach((item, index) => {
    if (index % every) return;
    root.append(svg("text", {x: xOf(index), y: H - PAD.bottom + 16, "text-anchor": "middle"}, item.label));
  });
}

/** Attendance rate (0..1) per meeting as a line with a dot per meeting; gaps where null. */
export function rateChart(label, items) {
  const percent = (value) => Math.round(value * 100) + "%";
  const root = frame(label, 1, percent);
  if (!items.length) return empty(root);
  const plotW = W - PAD.left - PAD.right, plotH = H - PAD.top - PAD.bottom;
  const xOf = (i) => PAD.left + (items.length === 1 ? plotW / 2 : (plotW * i) / (items.length - 1));
  const yOf = (v) => PAD.top + plotH * (1 - v);
  let path = "", pen = false;
  items.forEach((item, i) => {
    if (item.value === null) { pen = false; return; }
    path += `${pen ? "L" : "M"}${xOf(i).toFixed(1)},${yOf(item.value).toFixed(1)} `;
    pen = true;
  });
  root.append(svg("path", {d: path.trim() || "M0,0", fill: "none", stroke: "#1d4ed8", "stroke-width": 2}));
  items.forEach((item, i) => {
    if (item.value === null) return;
    root.append(titled(svg("circle", {cx: xOf(i), cy: yOf(item.value), r: 4, fill: "#1d4ed8", class: "mark"}),
      `${item.label}: ${percent(item.value)}${item.title ? " (" + item.title + ")" : ""}`));
  });
  xLabels(root, items, xOf);
  return root;
}

/** A count per meeting as bars (late arrivals). */
export function barChart(label, items, color) {
  const max = Math.max(1, ...items.map((item) => item.value || 0));
  const root = frame(label, max, (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1)));
  if (!items.length) return empty(root);
  const plotW = W - PAD.left - PAD.right, plotH = H - PAD.top - PAD.bottom;
  const step = plotW / items.length, width = Math.max(2, Math.min(40, step * 0.7));
  const xOf = (i) => PAD.left + step * i + step / 2;
  items.forEach((item, i) => {
    const height = (plotH * (item.value || 0)) / max;
    root.append(titled(svg("rect", {
      x: xOf(i) - width / 2, y: PAD.top + plotH - height, width, height: Math.max(height, 0.5),
      fill: color || "#b45309", class: "mark",
    }), `${item.label}: ${item.value || 0}`));
  });
  xLabels(root, items, xOf);
  return root;
}

function empty(root) {
  root.append(svg("text", {x: W / 2, y: H / 2, "text-anchor": "middle"}, "No meetings in this range"));
  return root;
}

const STATE_COLOR = {ok: "#15803d", warn: "#b45309", bad: "#b91c1c", none: "#6b7280"};

/** Rooms placed by lat/lon (equirectangular, fitted to their bounding box). */
export function roomMap(rooms, stateOf) {
  const size = 320, pad = 24;
  const root = svg("svg", {viewBox: `0 0 ${size} ${size}`, role: "img", "aria-label": "Map of rooms"});
  const placed = rooms.filter((room) => room.lat !== null && room.lon !== null);
  if (!placed.length) {
    root.append(svg("text", {x: size / 2, y: size / 2, "text-anchor": "middle"}, "No room has coordinates"));
    return root;
  }
  const lats = placed.map((r) => r.lat), lons = placed.map((r) => r.lon);
  const midLat = (Math.min(...lats) + Math.max(...lats)) / 2;
  const squeeze = Math.cos((midLat * Math.PI) / 180);
  const spanX = Math.max((Math.max(...lons) - Math.min(...lons)) * squeeze, 1e-4);
  const spanY = Math.max(Math.max(...lats) - Math.min(...lats), 1e-4);
  const scale = (size - 2 * pad) / Math.max(spanX, spanY);
  for (const room of placed) {
    const x = pad + ((room.lon - Math.min(...lons)) * squeeze) * scale + (size - 2 * pad - spanX * scale) / 2;
    const y = size - pad - (room.lat - Math.min(...lats)) * scale - (size - 2 * pad - spanY * scale) / 2;
    const state = stateOf(room);
    const dot = svg("circle", {cx: x, cy: y, r: 9, fill: STATE_COLOR[state.tone], stroke: "#fff", "stroke-width": 2,
      class: "room-dot", "data-room": `${room.site}/${room.room}`});
    root.append(titled(dot, `${room.name || room.room}: ${state.text}`));
    const left = x > size / 2;  // labels grow inwards, never off the map
    root.append(svg("text", {x: left ? x - 12 : x + 12, y: y + 4, "text-anchor": left ? "end" : "start"},
      room.name || room.room));
  }
  return root;
}
