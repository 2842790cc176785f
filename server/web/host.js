// The host control panel (/host/<room_id>): go live, pin products, launch flash sales,
// a live dashboard (HTTP poll + WS ticks), comment moderation and announcements.
import { LiveSaleClient, formatMoney, tokenClaims } from "/static/livesale.js";

const byId = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

const roomId = (() => {
  const m = location.pathname.match(/\/host\/([^/?#]+)/);
  if (m) return decodeURIComponent(m[1]);
  return new URLSearchParams(location.search).get("room") || "demo";
})();

const TOKEN_KEY = "livesale.hostToken";
const POLL_MS = 1000;
const BUCKET_MS = 60000;        // the dashboard's orders_per_minute buckets
const WINDOW_MS = 30 * 60000;

let token = null;
let client = null;
let dash = null;            // last dashboard reply
let roomInfo = null;        // GET /api/rooms/{room}
let pollTimer = null;
const orderBuckets = new Map(); // bucket start (ms) -> orders
let lastOrdersTotal = null;
const mutedUsers = new Set();

// ---------------------------------------------------------------------------------------------
// helpers

function setText(el, text) {
  text = text ?? "";
  if (el && el.textContent !== text) el.textContent = text;
}
let toastTimer = null;
function toast(text, kind = "info") {
  const el = byId("toast");
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}
function num(v) {
  const n = Number(v);
  return Number.isFinite(n) ? n : 0;
}
function fmtInt(n) {
  return new Intl.NumberFormat().format(Math.round(num(n)));
}
function fmtSecs(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}
function minorDigits(currency) {
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits;
  } catch {
    return 2;
  }
}
function hue(str) {
  let h = 0;
  for (const ch of String(str)) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return h % 360;
}
function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(e.dataset, v);
    else if (k === "style") e.style.cssText = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}
async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) {
    const err = new Error(data?.error?.message || `${method} ${path}: HTTP ${res.status}`);
    err.status = res.status;
    err.code = data?.error?.code;
    throw err;
  }
  return data;
}

// ---------------------------------------------------------------------------------------------
// sign in

function readToken() {
  const m = location.hash.match(/[#&]token=([^&]+)/);
  if (m) {
    const t = decodeURIComponent(m[1]);
    sessionStorage.setItem(TOKEN_KEY, t);
    history.replaceState(null, "", location.pathname + location.search); // keep it out of history
    return t;
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function checkTokenLocally(t) {
  const claims = tokenClaims(t);
  if (!claims) return "That does not look like a token (expected a JWT: xxx.yyy.zzz).";
  if (claims.role !== "host") return `This is a ${claims.role || "non-host"} token; a host token is needed.`;
  if (claims.exp && claims.exp * 1000 < Date.now()) return "This token has expired.";
  const rooms = claims.rooms || [];
  if (Array.isArray(rooms) && rooms.length && !rooms.includes("*") && !rooms.includes(roomId)) {
    return `This token is for ${rooms.join(", ")}, not for room ${roomId}.`;
  }
  return null;
}

function showSignin(error = "") {
  byId("signin-form").hidden = false;
  byId("panel").hidden = true;
  byId("signout-button").hidden = true;
  setText(byId("signin-error"), error);
}

async function signIn(t) {
  const problem = checkTokenLocally(t);
  if (problem) { showSignin(problem); return false; }
  token = t;
  try {
    await loadRoom();
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      showSignin(err.status === 401 ? "The server rejected this token." : "This token may not manage this room.");
      return false;
    }
    if (err.status !== 404) toast(`Could not load the room: ${err.message}`, "error");
  }
  sessionStorage.setItem(TOKEN_KEY, t);
  byId("signin-form").hidden = true;
  byId("panel").hidden = false;
  byId("signout-button").hidden = false;
  startLive();
  return true;
}

async function loadRoom() {
  roomInfo = await api("GET", `/api/rooms/${encodeURIComponent(roomId)}`);
  // A bad token is only detected by an authenticated call: the dashboard.
  await poll(true);
  render();
}

function startLive() {
  if (client) client.close();
  client = new LiveSaleClient({ room: roomId, token });
  client.addEventListener("change", scheduleRender);
  client.addEventListener("state", renderConnection);
  client.addEventListener("user_muted", (e) => mutedUsers.add(e.detail.user));
  client.addEventListener("error", (e) => {
    const d = e.detail;
    if (d.request === "join" && d.code === "NOT_FOUND") toast(`Room ${roomId} does not exist yet.`, "error");
    else if (!d.rid) toast(`${d.code}: ${d.message || ""}`, "error"); // replies with a rid are shown by the caller
  });
  client.start().catch(() => {});
  clearInterval(pollTimer);
  pollTimer = setInterval(() => poll(false), POLL_MS);
}

// ---------------------------------------------------------------------------------------------
// dashboard

let polling = false;
async function poll(throwErrors) {
  if (polling && !throwErrors) return;
  polling = true;
  try {
    dash = await api("GET", `/api/rooms/${encodeURIComponent(roomId)}/dashboard`);
    recordOrders(dash);
    scheduleRender();
  } catch (err) {
    if (throwErrors) throw err;
    if (err.status === 401) { toast("Your host token is no longer accepted.", "error"); }
  } finally {
    polling = false;
  }
}

function dashOrders(d) {
  if (!d) return null;
  if (typeof d.orders === "number") return d.orders;
  if (typeof d.orders_total === "number") return d.orders_total;
  if (d.orders && typeof d.orders.count === "number") return d.orders.count;
  return null;
}
function latestOrders(d) {
  if (!d) return [];
  const l = d.latest_orders || d.recent_orders || d.orders_latest || (Array.isArray(d.orders) ? d.orders : null) || [];
  return Array.isArray(l) ? l : [];
}
function gmvOf(d) {
  // number (minor units, room currency) | {amount, currency} | {EUR: 1234, ...}
  if (!d) return null;
  const g = d.gmv ?? d.gmv_minor;
  const cur = d.currency || d.gmv_currency || latestOrders(d)[0]?.currency || client?.salesList()[0]?.currency || "EUR";
  if (typeof g === "number") return [[cur, g]];
  if (g && typeof g === "object") {
    if (typeof g.amount === "number") return [[g.currency || cur, g.amount]];
    return Object.entries(g).filter(([, v]) => typeof v === "number");
  }
  return null;
}
/** Orders confirmed in the last 60 s: exact from the latest orders, estimated from buckets beyond. */
function ordersLastMinute() {
  if (!dash) return 0;
  if (typeof dash.orders_per_minute === "number") return dash.orders_per_minute;
  const now = client ? client.serverNow() : Date.now();
  const latest = latestOrders(dash);
  const recent = latest.filter((o) => now - orderTime(o) < 60000).length;
  if (recent < latest.length || latest.length < 20) return recent;
  const cur = Math.floor(now / 60000) * 60000;
  const frac = 1 - (now - cur) / 60000;
  return Math.round((orderBuckets.get(cur) || 0) + (orderBuckets.get(cur - 60000) || 0) * frac);
}

function orderTime(o) {
  return num(o.confirmed_at ?? o.ts ?? o.created_at ?? o.at);
}

function recordOrders(d) {
  const now = client ? client.serverNow() : Date.now();
  const series = Array.isArray(d.orders_per_minute) ? d.orders_per_minute : (d.orders_series || d.orders_timeline);
  if (Array.isArray(series) && series.length) {
    // [[ts, count], ...] or [{t|ts, orders|count}, ...]: the server's own buckets win.
    orderBuckets.clear();
    for (const p of series) {
      const t = Array.isArray(p) ? p[0] : (p.minute ?? p.t ?? p.ts ?? p.at);
      const c = Array.isArray(p) ? p[1] : (p.orders ?? p.count ?? p.n);
      const b = Math.floor(num(t) / BUCKET_MS) * BUCKET_MS;
      orderBuckets.set(b, (orderBuckets.get(b) || 0) + num(c));
    }
    return;
  }
  const total = dashOrders(d);
  if (total === null) return;
  if (lastOrdersTotal === null) {
    // First poll: seed the chart from the latest orders' timestamps.
    for (const o of latestOrders(d)) {
      const t = orderTime(o);
      if (t && now - t < WINDOW_MS) {
        const b = Math.floor(t / BUCKET_MS) * BUCKET_MS;
        orderBuckets.set(b, (orderBuckets.get(b) || 0) + 1);
      }
    }
  } else if (total > lastOrdersTotal) {
    const b = Math.floor(now / BUCKET_MS) * BUCKET_MS;
    orderBuckets.set(b, (orderBuckets.get(b) || 0) + (total - lastOrdersTotal));
  }
  lastOrdersTotal = total;
  for (const b of orderBuckets.keys()) if (b < now - WINDOW_MS - BUCKET_MS) orderBuckets.delete(b);
}

// ---------------------------------------------------------------------------------------------
// rendering

let queued = false;
function scheduleRender() {
  if (queued) return;
  queued = true;
  requestAnimationFrame(() => { queued = false; render(); });
}

function renderConnection() {
  const state = client ? client.state : "idle";
  document.body.dataset.conn = state;
  byId("conn-state").dataset.state = state;
  const banner = byId("banner");
  const text = state === "reconnecting" ? "Reconnecting…" : null;
  banner.hidden = !text;
  if (text) setText(byId("banner-text"), text);
}

function allProducts() {
  const map = new Map();
  for (const p of roomInfo?.products || []) map.set(p.product_id, p);
  for (const p of client?.products || []) map.set(p.product_id, { ...(map.get(p.product_id) || {}), ...p });
  return Array.from(map.values());
}

function allSales() {
  const map = new Map();
  for (const s of roomInfo?.sales || []) map.set(s.sale_id, s);
  for (const s of dash?.sales || []) map.set(s.sale_id, { ...(map.get(s.sale_id) || {}), ...s });
  // Live WS state is fresher than the 1 s poll for units and state.
  for (const s of client?.sales?.values() || []) {
    const prev = map.get(s.sale_id) || {};
    map.set(s.sale_id, { ...prev, ...s, sold: prev.sold ?? s.sold });
  }
  return Array.from(map.values()).sort((a, b) => num(b.starts_at) - num(a.starts_at));
}

function render() {
  renderConnection();
  const room = client?.room || roomInfo?.room || roomInfo || {};
  setText(byId("host-room-title"), room.title || roomId);
  const status = room.status || "scheduled";
  const pill = byId("room-status");
  pill.dataset.status = status;
  setText(pill, status);
  byId("go-live-button").disabled = status === "live";
  byId("end-live-button").disabled = status !== "live";

  const viewers = client?.joined ? client.viewers : num(dash?.viewers);
  setText(byId("viewers-now"), fmtInt(viewers));
  setText(byId("likes"), fmtInt(client?.joined ? Math.max(client.likes, num(dash?.likes)) : num(dash?.likes)));
  const gmv = gmvOf(dash);
  setText(byId("gmv"), gmv && gmv.length ? gmv.map(([c, v]) => formatMoney(v, c)).join(" + ") : formatMoney(0, "EUR"));
  setText(byId("orders-total"), fmtInt(dashOrders(dash) ?? 0));
  setText(byId("orders-per-minute"), fmtInt(ordersLastMinute()));

  const sales = allSales();
  const live = sales.filter((s) => ["open", "scheduled"].includes(client ? client.salePhase(s) : s.state));
  setText(byId("units-left-total"), live.length ? fmtInt(live.reduce((a, s) => a + num(s.units_left), 0)) : (sales.length ? "0" : "–"));

  renderFunnel(viewers);
  renderSales(sales);
  renderProducts();
  renderComments();
  renderOrders();
  drawChart();
}

function renderFunnel(viewers) {
  const f = dash?.funnel || {};
  const vals = {
    viewers: num(f.viewers ?? f.peak_viewers ?? viewers),
    tapped: num(f.tapped_buy ?? f.tapped ?? f.buy_taps ?? f.taps),
    reserved: num(f.reserved ?? f.holds ?? f.reservations),
    paid: num(f.paid ?? f.orders ?? dashOrders(dash)),
  };
  const max = Math.max(1, ...Object.values(vals));
  for (const [k, v] of Object.entries(vals)) {
    const row = byId(`funnel-${k}`);
    row.querySelector(".funnel-fill").style.width = `${(v / max) * 100}%`;
    setText(row.querySelector(".funnel-value"), fmtInt(v));
    row.dataset.value = String(v);
  }
}

function renderSales(sales) {
  const tbody = byId("sales-table").querySelector("tbody");
  setText(byId("sales-count"), sales.length ? String(sales.length) : "");
  const now = client ? client.serverNow() : Date.now();
  const rows = [];
  for (const s of sales) {
    const phase = client ? client.salePhase(s, now) : s.state;
    const left = num(s.units_left ?? s.allocated);
    const sold = s.sold ?? (s.allocated !== undefined ? null : null);
    const pct = s.allocated ? (left / s.allocated) * 100 : 0;
    let timing = "";
    if (phase === "scheduled") timing = `opens in ${fmtSecs(s.starts_at - now)}`;
    else if (phase === "open") timing = `ends in ${fmtSecs(s.ends_at - now)}`;
    else if (s.ends_at && s.ends_at <= now) timing = `ended ${new Date(s.ends_at - (client?.offset || 0)).toLocaleTimeString()}`;
    else timing = s.ends_at ? `until ${new Date(s.ends_at - (client?.offset || 0)).toLocaleTimeString()}` : "";
    const canEnd = phase === "open" || phase === "scheduled";
    const title = s.title || allProducts().find((p) => p.product_id === s.product_id)?.title || s.product_id;
    rows.push(el("tr", { "data-testid": "sale-row", "data-sale-id": s.sale_id, "data-state": phase,
                         "data-members-only": s.members_only === true ? "true" : "false" },
      el("td", {}, el("div", { style: "font-weight:700" }, title,
          s.members_only === true ? el("span", {
            class: "members-badge", "data-testid": "sale-members-badge",
            title: "Members only: guest viewer tokens cannot buy this sale",
          }, "members only") : null),
        el("div", { style: "color:var(--faint);font-family:var(--mono);font-size:11px" }, s.sale_id)),
      el("td", {}, el("span", { class: "state-tag", "data-state": phase }, phase.replace("_", " "))),
      el("td", { class: "num" }, formatMoney(s.unit_price, s.currency || "EUR")),
      el("td", { class: "num" },
        el("span", { "data-testid": "sale-units-left" }, String(left)), ` / ${fmtInt(s.allocated)}`,
        el("div", { class: "mini-bar" }, el("div", { style: `width:${pct}%` }))),
      el("td", { class: "num", "data-testid": "sale-sold" }, sold === null || sold === undefined ? "–" : fmtInt(sold)),
      el("td", { style: "color:var(--muted);white-space:nowrap" }, timing),
      el("td", { class: "num" }, canEnd ? el("button", {
        class: "btn btn-small btn-danger", type: "button", "data-testid": "end-sale-button",
        onclick: () => act(() => client.endSale(s.sale_id), "Sale ended"),
      }, "End") : ""),
    ));
  }
  if (!rows.length) rows.push(el("tr", { class: "empty" }, el("td", { colspan: "7" }, "No flash sales yet: launch one →")));
  tbody.replaceChildren(...rows);
}

let productsKey = "";
function renderProducts() {
  const products = allProducts();
  const pinned = client?.pinned?.product_id ?? (client?.joined ? null : roomInfo?.pinned?.product_id);
  setText(byId("products-count"), String(products.length));
  byId("unpin-button").disabled = !pinned;
  const key = JSON.stringify([products.map((p) => [p.product_id, p.title, p.unit_price, p.image_url || "", p.sku]), pinned]);
  if (key === productsKey) return;
  productsKey = key;
  const list = byId("product-list");
  list.replaceChildren(...products.map((p) => {
    const isPinned = p.product_id === pinned;
    const initials = (p.title || "?").split(/\s+/).slice(0, 2).map((w) => w[0]).join("").toUpperCase();
    const thumb = el("div", { class: "product-thumb", style: `--h:${hue(p.product_id)}` });
    if (p.image_url) thumb.append(el("img", { src: p.image_url, alt: "" })); else thumb.textContent = initials;
    return el("li", { class: `product-row${isPinned ? " pinned" : ""}`, "data-testid": "product-row", "data-product-id": p.product_id },
      thumb,
      el("div", { class: "product-row-info" },
        el("div", { class: "product-row-title" }, p.title || p.sku),
        el("div", { class: "product-row-sub" }, `${p.sku} · ${formatMoney(p.unit_price, p.currency || "EUR")}`)),
      isPinned
        ? el("span", { class: "pill pinned-pill" }, "Pinned")
        : el("button", { class: "btn btn-small", type: "button", "data-testid": "pin-button",
          onclick: () => act(() => client.pin(p.product_id), "Pinned") }, "Pin"));
  }));
  if (!products.length) list.append(el("li", { style: "color:var(--faint);font-size:14px" }, "No products yet: add one below."));
  // The launch form's product choices.
  const sel = byId("sale-product");
  const cur = sel.value;
  sel.replaceChildren(...products.map((p) => el("option", { value: p.product_id }, `${p.title || p.sku} · ${formatMoney(p.unit_price, p.currency || "EUR")}`)));
  if (products.some((p) => p.product_id === cur)) sel.value = cur;
  else if (pinned) sel.value = pinned;
}

const modEls = new Map();
function renderComments() {
  const list = byId("mod-comments");
  const comments = client?.comments || [];
  setText(byId("comments-count"), comments.length ? String(comments.length) : "");
  const ids = new Set(comments.map((c) => c.id));
  for (const [id, li] of modEls) if (!ids.has(id)) { li.remove(); modEls.delete(id); }
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  let added = false;
  for (const c of comments) {
    let li = modEls.get(c.id);
    if (!li) {
      li = el("li", { class: "mod-item", "data-testid": "mod-comment", "data-id": c.id, "data-user": c.user },
        el("span", { class: "comment-text" },
          el("span", { class: "comment-name", style: `--h:${hue(c.user)}` }, c.name || c.user), c.text),
        el("span", { class: "actions" },
          el("button", { class: "btn btn-small", type: "button", "data-testid": "hide-button", title: "Hide this comment for everyone",
            onclick: () => act(() => client.hideComment(c.id), "Comment hidden") }, "Hide"),
          el("button", { class: "btn btn-small btn-danger", type: "button", "data-testid": "mute-button", title: `Mute ${c.name || c.user}`,
            onclick: () => act(() => client.mute(c.user), `${c.name || c.user} muted`) }, "Mute")));
      list.append(li);
      modEls.set(c.id, li);
      added = true;
    }
    li.classList.toggle("muted-user", mutedUsers.has(c.user) || !!client?.muted?.has(c.user));
  }
  if (added && atBottom) list.scrollTop = list.scrollHeight;
}

let ordersKey = "";
function renderOrders() {
  const orders = latestOrders(dash).slice(0, 30);
  const key = orders.map((o) => o.order_id).join(",");
  if (key === ordersKey) return;
  ordersKey = key;
  byId("latest-orders").replaceChildren(...orders.map((o) => {
    const t = orderTime(o);
    return el("li", { "data-testid": "order-row", "data-order-id": o.order_id || "" },
      el("span", { class: "oid", title: `${o.order_id} by ${o.user_id || "?"}` },
        `${o.qty ?? 1} × ${o.title || saleTitle(o.sale_id)}`),
      el("span", { class: "amount" }, formatMoney(o.total ?? num(o.unit_price) * num(o.qty ?? 1), o.currency || "EUR")),
      el("span", { class: "when" }, t ? new Date(t - (client?.offset || 0)).toLocaleTimeString() : ""));
  }));
}

function saleTitle(saleId) {
  const s = allSales().find((x) => x.sale_id === saleId);
  return s?.title || saleId || "";
}

function drawChart() {
  const canvas = byId("orders-chart");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const now = client ? client.serverNow() : Date.now();
  const end = Math.floor(now / BUCKET_MS) * BUCKET_MS;
  const n = WINDOW_MS / BUCKET_MS;
  const values = [];
  for (let i = n - 1; i >= 0; i--) values.push(orderBuckets.get(end - i * BUCKET_MS) || 0);
  const max = Math.max(4, ...values);
  const padL = 30, padR = 8, padT = 10, padB = 22;
  const cw = w - padL - padR;
  const ch = h - padT - padB;
  // grid + y labels
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6f6986";
  ctx.strokeStyle = "rgba(255,255,255,0.06)";
  ctx.lineWidth = 1;
  const steps = 4;
  for (let i = 0; i <= steps; i++) {
    const y = padT + ch - (ch * i) / steps;
    ctx.beginPath(); ctx.moveTo(padL, Math.round(y) + 0.5); ctx.lineTo(w - padR, Math.round(y) + 0.5); ctx.stroke();
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    ctx.fillText(String(Math.round((max * i) / steps)), padL - 6, y);
  }
  // x labels
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const mins of [30, 25, 20, 15, 10, 5, 0]) {
    const x = padL + cw - (cw * mins * 60000) / WINDOW_MS;
    ctx.fillText(mins === 0 ? "now" : `-${mins}m`, Math.min(Math.max(x, padL + 10), w - padR - 12), padT + ch + 6);
  }
  // bars
  const bw = cw / n;
  const grad = ctx.createLinearGradient(0, padT, 0, padT + ch);
  grad.addColorStop(0, "#ff3d71");
  grad.addColorStop(1, "#ff8a3d");
  ctx.fillStyle = grad;
  values.forEach((v, i) => {
    if (!v) return;
    const bh = Math.max(2, (v / max) * ch);
    const x = padL + i * bw + bw * 0.18;
    const y = padT + ch - bh;
    const r = Math.min(4, bw * 0.3);
    ctx.beginPath();
    ctx.moveTo(x, padT + ch);
    ctx.lineTo(x, y + r);
    ctx.quadraticCurveTo(x, y, x + r, y);
    ctx.lineTo(x + bw * 0.64 - r, y);
    ctx.quadraticCurveTo(x + bw * 0.64, y, x + bw * 0.64, y + r);
    ctx.lineTo(x + bw * 0.64, padT + ch);
    ctx.closePath();
    ctx.fill();
  });
  const acc = values.reduce((x, y) => x + y, 0);
  canvas.dataset.total = String(acc);
}

// ---------------------------------------------------------------------------------------------
// actions

async function act(fn, okText) {
  try {
    const res = await fn();
    if (okText) toast(okText, "ok");
    return res;
  } catch (err) {
    toast(`${err.code || "ERROR"}: ${err.message}`, "error");
    return null;
  } finally {
    scheduleRender();
  }
}

function wire() {
  byId("viewer-link").href = `/rooms/${encodeURIComponent(roomId)}`;
  setText(byId("room-id"), roomId);
  byId("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = byId("token-input").value.trim().replace(/^Bearer\s+/i, "");
    signIn(t);
  });
  byId("signout-button").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    if (client) client.close();
    client = null;
    clearInterval(pollTimer);
    token = null;
    showSignin();
  });
  byId("go-live-button").addEventListener("click", () => act(() => client.goLive(), "You are live"));
  byId("end-live-button").addEventListener("click", () => {
    if (confirm("End the live show for everyone?")) act(() => client.endLive(), "Live ended");
  });
  byId("unpin-button").addEventListener("click", () => act(() => client.unpin(), "Unpinned"));

  byId("launch-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const productId = f.get("product");
    if (!productId) { toast("Add a product first.", "error"); return; }
    const product = allProducts().find((p) => p.product_id === productId);
    const opts = {
      product: productId,
      units: parseInt(f.get("units"), 10),
      limit: parseInt(f.get("limit"), 10),
      starts_in_s: parseInt(f.get("starts_in_s"), 10),
      duration_s: parseInt(f.get("duration_s"), 10),
    };
    const price = String(f.get("price") || "").trim();
    if (price) opts.price = Math.round(parseFloat(price) * 10 ** minorDigits(product?.currency || "EUR"));
    const ttl = String(f.get("hold_ttl_s") || "").trim();
    if (ttl) opts.hold_ttl_s = parseInt(ttl, 10);
    if (f.get("members_only")) opts.members_only = true;  // guest viewer tokens may not buy it
    const btn = byId("launch-button");
    btn.disabled = true;
    const res = await act(() => client.launchSale(opts), null);
    btn.disabled = false;
    if (res) {
      const id = res.sale?.sale_id || res.sale || "";
      setText(byId("launch-result"), `Launched ${id}`);
      toast(`${opts.members_only ? "Members-only flash sale" : "Flash sale"} launched: opens in ${opts.starts_in_s}s`, "ok");
      if (res.sale && typeof res.sale === "object") client._upsertSale(res.sale);
      poll(false);
    }
  });

  byId("product-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const currency = String(f.get("currency")).toUpperCase();
    const body = {
      sku: f.get("sku"), title: f.get("title"), currency,
      unit_price: Math.round(parseFloat(f.get("price")) * 10 ** minorDigits(currency)),
    };
    if (f.get("image_url")) body.image_url = f.get("image_url");
    const res = await act(() => api("POST", `/api/rooms/${encodeURIComponent(roomId)}/products`, body), "Product added");
    if (res) {
      ev.target.reset();
      try { roomInfo = await api("GET", `/api/rooms/${encodeURIComponent(roomId)}`); } catch { /* keep */ }
      scheduleRender();
    }
  });

  byId("announce-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = byId("announce-input");
    const text = input.value.trim();
    if (!text) return;
    const res = await act(() => client.announce(text), "Announced");
    if (res) input.value = "";
  });

  window.addEventListener("resize", () => drawChart());
  setInterval(() => { if (client) render(); }, 1000);
}

wire();
const initial = readToken();
if (initial) signIn(initial); else showSignin();
