// The show report (/rooms/<room_id>/report): GET /api/rooms/{room}/report (docs/GROWTH-reports.md) for the
// room's host or a merchant, drawn with inline SVG charts (funnel, watch-time histogram, GMV by source,
// fan team and SKU) and a table of offline redemptions; "Download CSV" fetches ?format=csv with the token.
// The token comes from the host panel's link (#token=, ui.js readToken) or the sign-in form.
import { formatMoney, tokenClaims } from "/static/livesale.js";
import { apiWith, byId, el, fmtInt, num, readToken, setText, toast } from "/static/ui.js";

const roomId = (() => {
  const m = location.pathname.match(/\/rooms\/([^/?#]+)\/report/);
  return m ? decodeURIComponent(m[1]) : new URLSearchParams(location.search).get("room") || "";
})();
const TOKEN_KEY = "livesale.reportToken";
const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#6e5bff", "#6ea8ff", "#ffc247", "#20c997", "#ff8a3d", "#ff3d71"];

let token = null;
let report = null;
const api = apiWith(() => token);
const reportPath = () => `/api/rooms/${encodeURIComponent(roomId)}/report`;

// ---------------------------------------------------------------------------------------------
// sign-in

function checkTokenLocally(t) {
  const claims = tokenClaims(t);
  if (!claims) return "That does not look like a token (expected a JWT: xxx.yyy.zzz).";
  if (claims.exp && claims.exp * 1000 < Date.now()) return "This token has expired.";
  if (claims.role === "merchant") return null;
  if (claims.role !== "host") return `This is a ${claims.role || "viewer"} token; a host or merchant token is needed.`;
  const rooms = claims.rooms || [];
  if (Array.isArray(rooms) && rooms.length && !rooms.includes("*") && !rooms.includes(roomId)) {
    return `This host token is for ${rooms.join(", ")}, not for room ${roomId}.`;
  }
  return null;
}

function showSignin(error = "") {
  byId("signin-form").hidden = false;
  byId("report").hidden = true;
  for (const b of ["signout-button", "csv-button", "refresh-button"]) byId(b).hidden = true;
  setText(byId("signin-error"), error);
  document.body.dataset.state = "signin";
}

async function signIn(t) {
  const problem = checkTokenLocally(t);
  if (problem) { showSignin(problem); return; }
  token = t;
  try {
    await load();
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      showSignin(err.status === 401 ? "The server rejected this token." : "This token may not read this room's report.");
      return;
    }
    setText(byId("report-error"), err.status === 404 ? `There is no room ${roomId}.` : `Could not load the report: ${err.message}`);
    document.body.dataset.state = "error";
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, t);
  byId("signin-form").hidden = true;
  for (const b of ["signout-button", "csv-button", "refresh-button"]) byId(b).hidden = false;
}

async function load() {
  report = await api("GET", reportPath());
  setText(byId("report-error"), "");
  render();
}

async function downloadCsv() {
  let res;
  try {
    res = await fetch(`${reportPath()}?format=csv`, { headers: { Authorization: `Bearer ${token}` } });
  } catch (e) {
    toast(`Cannot reach the server (${e.message})`, "error");
    return;
  }
  if (!res.ok) { toast(`The CSV could not be made (HTTP ${res.status})`, "error"); return; }
  const url = URL.createObjectURL(await res.blob());
  const a = el("a", { href: url, download: `report-${roomId}.csv` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// ---------------------------------------------------------------------------------------------
// SVG charts

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

/** Horizontal bars: rows of {key, label, value (bar length), text (shown at the end), title (tooltip)}. */
function hbars(rows, { testid, empty = "Nothing yet.", narrow = false } = {}) {
  if (!rows.length) return el("div", { class: "empty", "data-testid": `${testid}-empty` }, empty);
  // a narrow card gets a narrower drawing, so its text is drawn at about the page's size
  const [W, LABEL, VALUE] = narrow ? [330, 78, 118] : [480, 120, 110];
  const ROW = 30, BAR = 20;
  const max = Math.max(1, ...rows.map((r) => num(r.value)));
  const track = W - LABEL - VALUE - 8;
  const g = rows.map((r, i) => {
    const y = i * ROW;
    const w = Math.max(num(r.value) > 0 ? 2 : 0, (num(r.value) / max) * track);
    return svg("g", { "data-testid": `${testid}-bar`, "data-key": r.key, "data-value": String(num(r.value)) },
      svg("title", {}, r.title || `${r.label}: ${r.text}`),
      svg("text", { x: 0, y: y + BAR / 2 + 4 }, truncate(r.label, narrow ? 11 : 18)),
      svg("rect", { x: LABEL, y, width: track, height: BAR, rx: 5, fill: "rgba(255,255,255,0.06)" }),
      svg("rect", { x: LABEL, y, width: w.toFixed(1), height: BAR, rx: 5, fill: COLOURS[i % COLOURS.length] }),
      svg("text", { class: "v", x: W, y: y + BAR / 2 + 4, "text-anchor": "end" }, r.text));
  });
  return svg("svg", { viewBox: `0 0 ${W} ${rows.length * ROW}`, role: "img", "aria-label": testid, "data-testid": testid }, ...g);
}

/** Vertical columns (the watch-time histogram): {key, label, value}. */
function columns(rows, { testid }) {
  const W = 480, H = 160, TOP = 18, FOOT = 22;
  const max = Math.max(1, ...rows.map((r) => num(r.value)));
  const slot = W / rows.length;
  const bw = slot * 0.64;
  const g = rows.map((r, i) => {
    const h = (num(r.value) / max) * (H - TOP - FOOT);
    const x = i * slot + (slot - bw) / 2;
    const y = H - FOOT - h;
    return svg("g", { "data-testid": `${testid}-bar`, "data-key": r.key, "data-value": String(num(r.value)) },
      svg("title", {}, `${r.label}: ${fmtInt(r.value)} viewers`),
      svg("rect", { x: x.toFixed(1), y: y.toFixed(1), width: bw.toFixed(1), height: Math.max(h, num(r.value) ? 2 : 0).toFixed(1),
                    rx: 4, fill: COLOURS[i % COLOURS.length] }),
      svg("text", { class: "v", x: (x + bw / 2).toFixed(1), y: (y - 5).toFixed(1), "text-anchor": "middle" }, fmtInt(r.value)),
      svg("text", { x: (x + bw / 2).toFixed(1), y: H - 6, "text-anchor": "middle" }, r.label));
  });
  return svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": testid, "data-testid": testid }, ...g);
}

function truncate(s, n) {
  s = String(s);
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

// ---------------------------------------------------------------------------------------------
// rendering

/** The currency with the most GMV in the report: bars are drawn in it (others are named in the text). */
function mainCurrency(r) {
  const entries = Object.entries(r.orders?.gmv || {});
  entries.sort((a, b) => b[1] - a[1]);
  return entries[0]?.[0] || "EUR";
}

function moneyText(gmv) {
  const parts = Object.entries(gmv || {}).filter(([, v]) => v).map(([c, v]) => formatMoney(v, c));
  return parts.length ? parts.join(" + ") : formatMoney(0, "EUR");
}

function fmtDuration(s) {
  s = Math.round(num(s));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

function gmvRows(groups, key, cur, labelOf = (k) => k) {
  return groups.map((g) => ({
    key: g[key], label: labelOf(g[key]), value: num(g.gmv?.[cur]),
    text: moneyText(g.gmv),
    title: `${labelOf(g[key])}: ${moneyText(g.gmv)} · ${fmtInt(g.orders)} ${g.orders === 1 ? "order" : "orders"} · ${fmtInt(g.units)} units`,
  }));
}

function put(id, node) {
  byId(id).replaceChildren(node);
}

function render() {
  const r = report;
  if (!r) return;
  document.body.dataset.state = "ready";
  byId("report").hidden = false;
  setText(byId("report-title"), r.room.title || r.room.room_id);
  const pill = byId("room-status");
  pill.dataset.status = r.room.status;
  setText(pill, r.room.status);
  setText(byId("generated-at"), `as of ${new Date(r.generated_at).toLocaleString()}`);

  const kpi = (id, v, text = fmtInt(v)) => { setText(byId(id), text); byId(id).dataset.value = String(v); };
  kpi("unique-viewers", r.unique_viewers);
  kpi("peak-concurrent", r.peak_concurrent);
  kpi("watch-median", r.watch_time.median_s, r.watch_time.viewers ? fmtDuration(r.watch_time.median_s) : "–");
  kpi("orders-count", r.orders.count);
  kpi("orders-units", r.orders.units);
  setText(byId("report-gmv"), moneyText(r.orders.gmv));

  const f = r.funnel;
  const steps = [["viewers", "Joined"], ["tapped", "Tapped buy"], ["reserved", "Reserved"], ["paid", "Paid"]];
  put("funnel-chart", hbars(steps.map(([k, label], i) => {
    const prev = i ? num(f[steps[i - 1][0]]) : 0;
    const rate = i && prev ? ` · ${Math.round((num(f[k]) / prev) * 100)}%` : "";
    return { key: k, label, value: num(f[k]), text: `${fmtInt(f[k])}${rate}` };
  }), { testid: "funnel" }));

  const w = r.watch_time;
  setText(byId("watch-summary"), w.viewers ? `median ${fmtDuration(w.median_s)} · mean ${fmtDuration(w.mean_s)}` : "");
  put("watch-chart", columns(w.buckets.map((b) => ({ key: b.label, label: b.label, value: b.viewers })), { testid: "watch" }));

  const cur = mainCurrency(r);
  put("source-chart", hbars(gmvRows(r.orders.by_source, "source", cur), { testid: "source", narrow: true }));
  put("team-chart", hbars(gmvRows(r.orders.by_team, "team", cur, (k) => k || "no team"),
                          { testid: "team", empty: "No orders yet.", narrow: true }));
  put("sku-chart", hbars(gmvRows(r.orders.by_sku, "sku", cur), { testid: "sku", empty: "No orders yet.", narrow: true }));

  const offline = r.orders.offline || [];
  setText(byId("offline-count"), offline.length ? String(offline.reduce((a, o) => a + num(o.redemptions), 0)) : "");
  const tbody = byId("offline-table").querySelector("tbody");
  tbody.replaceChildren(...(offline.length ? offline.map((o) => el("tr", { "data-testid": "offline-row", "data-channel": o.channel },
    el("td", {}, o.channel), el("td", { class: "num" }, fmtInt(o.redemptions)), el("td", { class: "num" }, fmtInt(o.units)),
    el("td", { class: "num" }, moneyText(o.gmv))))
    : [el("tr", { class: "empty" }, el("td", { colspan: "4" }, "No offline redemptions."))]));
}

// ---------------------------------------------------------------------------------------------

function wire() {
  setText(byId("room-id"), roomId);
  document.title = `livesale · report · ${roomId}`;
  byId("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    signIn(byId("token-input").value.trim().replace(/^Bearer\s+/i, ""));
  });
  byId("signout-button").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    report = null;
    showSignin();
  });
  byId("refresh-button").addEventListener("click", () => load().catch((err) => toast(err.message, "error")));
  byId("csv-button").addEventListener("click", downloadCsv);
}

wire();
const initial = readToken(TOKEN_KEY) || sessionStorage.getItem("livesale.hostToken") || sessionStorage.getItem("livesale.merchantToken");
if (initial) signIn(initial); else showSignin();
