// The host control panel (/host/<room_id>): go live, pin products, launch flash sales,
// a live dashboard (HTTP poll + WS ticks), comment moderation and announcements, the stock
// pools behind the room's sales (launch from a pool, top up, end and return the unsold units), and
// the live extras: fan teams and their leaderboard, polls, coupon drops and lucky draws.
import { LiveSaleClient, formatMoney, tokenClaims } from "/static/livesale.js";
import { apiWith, byId, el, fmtInt, hue, minorDigits, num, readToken, setText, toast } from "/static/ui.js";

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
// stock pools (GET /api/pools, /api/pools/{pool}, its ledger): polled with the dashboard
let poolList = null;            // [pool wire] or null (not loaded; or a server without pools)
const poolViews = new Map();    // pool_id -> GET /api/pools/{pool} (with sales and channels)
const ledgerReturns = new Map(); // sale_id -> units the pool's ledger shows returned by it
const endReturns = new Map();   // sale_id -> units returned when this panel ended it (allocated before - after)

// ---------------------------------------------------------------------------------------------
// helpers

const api = apiWith(() => token);

function fmtSecs(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
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
    pollPools();
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
    // the WS copy's `allocated` is the launch's; the dashboard's follows top-ups and returns to a pool
    // (and a closed sale's `sale_closed` copy may count units a pool has taken back since: the dashboard's wins)
    map.set(s.sale_id, { ...prev, ...s, sold: prev.sold ?? s.sold, allocated: prev.allocated ?? s.allocated,
                         units_left: s.state === "closed" && prev.units_left !== undefined ? prev.units_left : s.units_left });
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

  renderFunnel();
  renderSales(sales);
  renderProducts();
  renderPoolPicker();
  renderVariantPicker();
  renderPools(sales);
  renderComments();
  renderOrders();
  renderExtras();
  drawChart();
}

/** The funnel counts unique viewers per step (dashboard `funnel`, estimates within ~1%); what was asked
 *  (`requests`: taps, reservations, payments) is the line under it. */
function renderFunnel() {
  const f = dash?.funnel || {};
  const vals = { viewers: num(f.viewers), tapped: num(f.tapped), reserved: num(f.reserved), paid: num(f.paid) };
  const max = Math.max(1, ...Object.values(vals));
  for (const [k, v] of Object.entries(vals)) {
    const row = byId(`funnel-${k}`);
    row.querySelector(".funnel-fill").style.width = `${(v / max) * 100}%`;
    setText(row.querySelector(".funnel-value"), fmtInt(v));
    row.dataset.value = String(v);
  }
  const r = dash?.requests;
  const line = byId("funnel-requests");
  const n = (v, one, many) => `${fmtInt(v)} ${num(v) === 1 ? one : many}`;
  setText(line, r ? `Requests: ${n(r.tapped, "tap", "taps")} · ${n(r.reserved, "reservation", "reservations")} · ${n(r.paid, "payment", "payments")}`
    : "Requests: –");
  for (const k of ["tapped", "reserved", "paid"]) line.dataset[k] = String(num(r?.[k]));
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
    const pct = s.allocated ? Math.min(100, (left / s.allocated) * 100) : 0;
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
          }, "members only") : null,
          s.pool ? el("span", {
            class: "pool-badge", "data-testid": "sale-pool-badge",
            title: `Units from stock pool ${s.pool}; ending the sale returns the unsold ones`,
          }, `pool ${s.pool}`) : null),
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
        title: s.pool ? `End the sale now; its unsold units go back to pool ${s.pool}` : "End the sale now",
        onclick: () => (s.pool ? endAndReturn(s) : act(() => client.endSale(s.sale_id), "Sale ended")),
      }, s.pool ? "End & return" : "End") : returnedTag(s)),
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
// stock pools: the merchants' pools behind this room's sales (polled with the dashboard)

let poolsPolling = false;
let poolsMissing = false;   // the server has no stock pools (GET /api/pools is 404): the card says so
let poolPickerKey = "";
const poolEls = new Map();  // pool_id -> the card's block for it (kept, updated in place)

function newRequestId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();   // secure contexts (https, localhost)
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The pools the panel shows: those behind the room's sales, then the one picked in the launch form. */
function shownPoolIds(sales = allSales()) {
  const ids = new Set();
  for (const s of sales) if (s.pool) ids.add(s.pool);
  const picked = byId("sale-pool").value;
  if (picked) ids.add(picked);
  return Array.from(ids);
}

async function pollPools() {
  if (poolsPolling || !token || poolsMissing) return;
  poolsPolling = true;
  const problems = [];
  try {
    poolList = (await api("GET", "/api/pools")).pools || [];
    const ids = shownPoolIds();
    const views = await Promise.all(ids.map((id) => api("GET", `/api/pools/${encodeURIComponent(id)}`).catch((err) => err)));
    ids.forEach((id, i) => {
      const v = views[i];
      if (v instanceof Error) {
        problems.push(`pool ${id}: ${errText(v)}`);
        if (v.status === 404) poolViews.delete(id);
      } else {
        poolViews.set(id, v);
      }
    });
    for (const id of Array.from(poolViews.keys())) if (!ids.includes(id)) poolViews.delete(id);
    // units given back by this room's ended sales, from the pool's ledger (the reaper copies it to SQL)
    const withEnded = ids.filter((id) => (poolViews.get(id)?.sales || []).some((r) => r.room_id === roomId && r.ended));
    await Promise.all(withEnded.map(async (id) => {
      try {
        const { entries } = await api("GET", `/api/pools/${encodeURIComponent(id)}/ledger?limit=10000`);
        const sums = new Map();
        for (const e of entries || []) {
          if (e.kind === "return" && e.sale_id) sums.set(e.sale_id, (sums.get(e.sale_id) || 0) + num(e.units));
        }
        for (const [sale, n] of sums) ledgerReturns.set(sale, n);
      } catch (err) {
        problems.push(`ledger of ${id}: ${errText(err)}`);
      }
    }));
  } catch (err) {
    if (err.status === 404) poolsMissing = true;
    else problems.push(`stock pools: ${errText(err)}`);
  } finally {
    poolsPolling = false;
    setText(byId("pools-error"), problems.join(" · "));
    scheduleRender();
  }
}

function returnedOf(saleId) {
  const a = endReturns.get(saleId);
  const b = ledgerReturns.get(saleId);
  if (a === undefined && b === undefined) return null;
  return Math.max(a ?? 0, b ?? 0);
}

/** The sales table's last cell for an ended pool-backed sale: the units it gave back. */
function returnedTag(s) {
  if (!s.pool) return "";
  const n = returnedOf(s.sale_id);
  if (n === null) return "";
  return el("span", { class: "returned-tag", "data-testid": "sale-returned", "data-units": String(n),
                      title: `Unsold units returned to pool ${s.pool}` }, `↩ ${fmtInt(n)} returned`);
}

/** End a pool-backed sale: its unsold units go back to the pool; show how many (allocated before - after). */
async function endAndReturn(s) {
  const view = () => api("GET", `/api/pools/${encodeURIComponent(s.pool)}`).catch(() => null);
  const rowOf = (v) => (v?.sales || []).find((r) => r.sale_id === s.sale_id);
  const before = await view();
  const res = await act(() => client.endSale(s.sale_id), null);
  if (!res) return;
  const after = await view();
  if (after) poolViews.set(s.pool, after);
  let returned = null;
  if (rowOf(before) && rowOf(after)) {
    returned = Math.max(0, num(rowOf(before).allocated) - num(rowOf(after).allocated));
    endReturns.set(s.sale_id, returned);
  }
  toast(returned === null ? `Sale ended; its unsold units go back to pool ${s.pool}`
    : `Sale ended: ${fmtInt(returned)} unsold unit${returned === 1 ? "" : "s"} back in pool ${s.pool}`, "ok");
  scheduleRender();
  poll(false);
}

async function topUp(saleId, input, button, errEl) {
  const units = parseInt(input.value, 10);
  if (!(units >= 1)) {
    showError(errEl, { code: "INVALID", message: "top up by 1 unit or more" });
    return;
  }
  button.disabled = true;
  // a fresh request id per click: a retried click is a new top-up, a resent message is not
  const res = await act(() => client.request("topup_sale", { sale: saleId, units, request_id: newRequestId() }), null, errEl);
  button.disabled = false;
  const t = res?.topup;
  if (t) {
    toast(`Topped up ${fmtInt(units)}: ${fmtInt(t.units_left)} left in the sale, ${fmtInt(t.pool_available)} in pool ${t.pool}`, "ok");
    pollPools();
    poll(false);
  }
}

function renderPoolPicker() {
  const sel = byId("sale-pool");
  const pools = poolList || [];
  byId("sale-pool-label").hidden = !pools.length && !sel.value;
  const product = allProducts().find((p) => p.product_id === byId("sale-product").value);
  const fits = (p) => !!product && p.sku === product.sku && p.currency === (product.currency || "EUR");
  const key = JSON.stringify([product?.sku, product?.currency, pools.map((p) => [p.pool_id, fits(p)])]);
  if (key !== poolPickerKey) {  // rebuilt only when the choice changes (an open list stays open)
    poolPickerKey = key;
    const cur = sel.value;
    const sorted = [...pools].sort((a, b) => Number(fits(b)) - Number(fits(a)));
    sel.replaceChildren(el("option", { value: "" }, "None: the sale has units of its own"),
      ...sorted.map((p) => el("option", { value: p.pool_id, disabled: !fits(p) }, p.pool_id)));
    sel.value = pools.some((p) => p.pool_id === cur && fits(p)) ? cur : "";
  }
  for (const o of sel.options) {
    const p = pools.find((x) => x.pool_id === o.value);
    if (p) setText(o, `${p.title} · ${p.pool_id} · ${fmtInt(p.available)} available${fits(p) ? "" : ` (SKU ${p.sku})`}`);
  }
  const picked = pools.find((p) => p.pool_id === sel.value);
  const hint = byId("sale-pool-hint");
  if (picked) setText(hint, `Units come out of ${picked.pool_id} (${fmtInt(picked.available)} available now); ending the sale returns the unsold ones.`);
  else if (product && pools.some(fits)) setText(hint, `A stock pool holds ${product.sku}: pick it to sell the merchant's stock.`);
  else setText(hint, product && pools.length ? `No stock pool holds ${product.sku}.` : "");
}

// A sale of variants: for a product with `variants`, the launch form lists each variant with the stock
// pool holding its SKU (in the product's currency); the ticked ones are launched as one sale
// (launch_sale `variants: [{pool, units?}]`, blank units: the form's Units), all or nothing.
let variantPickerKey = "";
let variantRowsOf = null;        // the product the rows were built for
const variantRows = new Map();   // variant_id -> {row, check, units, info}

function renderVariantPicker() {
  const box = byId("sale-variants");
  const product = allProducts().find((p) => p.product_id === byId("sale-product").value);
  const pools = poolList || [];
  const rows = (product?.variants || []).map((v) => ({
    variant: v, pool: pools.find((p) => p.sku === v.sku && p.currency === (product.currency || "EUR")) || null,
  }));
  box.hidden = !rows.some((r) => r.pool);
  const key = JSON.stringify([product?.product_id, rows.map((r) => [r.variant.variant_id, r.pool?.pool_id || ""])]);
  if (key !== variantPickerKey) {  // rebuilt only when the choice changes (ticks and units typed are kept)
    variantPickerKey = key;
    const same = variantRowsOf === (product?.product_id ?? null);
    const prev = new Map(Array.from(variantRows, ([id, e]) => [id, { checked: e.check.checked, units: e.units.value }]));
    variantRows.clear();
    variantRowsOf = product?.product_id ?? null;
    byId("sale-variant-list").replaceChildren(...rows.map(({ variant: v, pool }) => {
      const e = {};
      const label = v.label || v.variant_id;
      e.check = el("input", { type: "checkbox", value: pool?.pool_id || "", disabled: !pool,
                              "data-testid": `sale-variant-${v.variant_id}` });
      e.info = el("span", { class: "variant-pool-info" });
      e.units = el("input", { type: "number", min: "1", step: "1", inputmode: "numeric", placeholder: "units",
                              disabled: !pool, "data-testid": `sale-variant-units-${v.variant_id}`,
                              "aria-label": `Units of ${label}` });
      const old = same && pool ? prev.get(v.variant_id) : null;
      if (old) { e.check.checked = old.checked; e.units.value = old.units; }
      e.row = el("div", { class: "variant-pool", "data-testid": "sale-variant-row", "data-variant-id": v.variant_id,
                          "data-pool-id": pool?.pool_id || "" },
        el("label", { class: "check" }, e.check, el("span", { class: "variant-pool-label" }, label), e.info), e.units);
      variantRows.set(v.variant_id, e);
      return e.row;
    }));
  }
  for (const { variant: v, pool } of rows) {
    setText(variantRows.get(v.variant_id).info,
      pool ? `${pool.pool_id} · ${fmtInt(pool.available)} available` : `no stock pool holds ${v.sku}`);
  }
  const n = box.hidden ? 0 : pickedVariants().length;
  setText(byId("sale-variants-hint"), n ? `One sale of ${n} variant${n === 1 ? "" : "s"}: blank units take Units; the stock pool above is not used.` : "");
}

/** The ticked variants of the launch form: [{pool, units?}] (launch_sale `variants`). */
function pickedVariants() {
  if (byId("sale-variants").hidden) return [];
  const out = [];
  for (const e of variantRows.values()) {
    if (!e.check.checked || !e.check.value || e.check.disabled) continue;
    const units = parseInt(e.units.value, 10);
    out.push({ pool: e.check.value, ...(units > 0 ? { units } : {}) });
  }
  return out;
}

function poolStat(b, key, label, tip) {
  b[key] = el("span", { class: "pool-stat-value", "data-testid": `pool-${key}` }, "–");
  return el("div", { class: "pool-stat", title: tip }, el("span", { class: "pool-stat-label" }, label), b[key]);
}

function buildPoolBlock(id) {
  const b = { saleEls: new Map() };
  b.title = el("span", { class: "pool-title", "data-testid": "pool-title" }, id);
  b.sub = el("span", { class: "pool-sub" }, id);
  b.picked = el("span", { class: "pool-picked", hidden: true }, "picked for launch");
  b.stats = el("div", { class: "pool-stats" },
    poolStat(b, "on-hand", "On hand", "Received + restocked - sold through channels: in the pool, in channel holds and at sales"),
    poolStat(b, "available", "Available", "In the pool, free to launch or top up a sale"),
    poolStat(b, "here", "Allocated here", "At this room's sales (sold units stay with their sale)"),
    poolStat(b, "elsewhere", "Allocated elsewhere", "At other rooms' sales"),
    poolStat(b, "channel-held", "Channel holds", "Held by channel buyers (web shop, stores), not yet paid"),
    poolStat(b, "sold", "Sold", "Sold by every sale of the pool and its channels"));
  b.sales = el("ul", { class: "pool-sales", "data-testid": "pool-sales" });
  b.away = el("div", { class: "pool-away", "data-testid": "pool-elsewhere-list" });
  b.root = el("div", { class: "pool-block", "data-testid": "pool-row", "data-pool-id": id },
    el("div", { class: "pool-head" }, b.title, b.sub, b.picked), b.stats, b.sales, b.away);
  return b;
}

function buildPoolSale(r) {
  const e = {};
  const span = (testid) => el("span", { "data-testid": testid }, "0");
  e.left = span("pool-sale-left");
  e.allocated = span("pool-sale-allocated");
  e.held = span("pool-sale-held");
  e.sold = span("pool-sale-sold");
  e.units = el("input", { type: "number", min: "1", step: "1", value: "10", inputmode: "numeric",
                          "data-testid": "pool-topup-units", "aria-label": "Units to add from the pool" });
  e.button = el("button", { class: "btn btn-small btn-primary", type: "submit", "data-testid": "pool-topup-button" }, "Top up");
  e.error = el("div", { class: "form-error", "data-testid": "pool-sale-error", role: "alert" });
  e.form = el("form", { class: "topup-form", "data-testid": "pool-topup-form", autocomplete: "off",
                        onsubmit: (ev) => { ev.preventDefault(); topUp(r.sale_id, e.units, e.button, e.error); } },
    e.units, e.button);
  e.returned = el("span", { class: "returned-tag", "data-testid": "pool-sale-returned", hidden: true });
  e.state = el("span", { class: "state-tag" });
  e.root = el("li", { class: "pool-sale", "data-testid": "pool-sale", "data-sale-id": r.sale_id },
    el("div", { class: "pool-sale-info" },
      el("div", { class: "pool-sale-title" }, r.title || r.sale_id, " ", e.state),
      el("div", { class: "pool-sale-id" }, r.sale_id)),
    el("div", { class: "pool-sale-nums" }, e.left, " left of ", e.allocated, " · held ", e.held, " · sold ", e.sold),
    el("div", { class: "pool-sale-act" }, e.form, e.returned),
    e.error);
  return e;
}

function syncChildren(parent, nodes) {
  const cur = parent.children;
  if (cur.length === nodes.length && nodes.every((n, i) => cur[i] === n)) return;
  parent.replaceChildren(...nodes);  // only when the set or order changed (inputs keep focus otherwise)
}

function renderPools(sales) {
  const card = byId("pools-card");
  card.hidden = poolsMissing;
  if (poolsMissing) return;
  const ids = shownPoolIds(sales);
  setText(byId("pools-count"), ids.length ? String(ids.length) : "");
  for (const id of Array.from(poolEls.keys())) if (!ids.includes(id)) poolEls.delete(id);
  const blocks = ids.map((id) => {
    let b = poolEls.get(id);
    if (!b) { b = buildPoolBlock(id); poolEls.set(id, b); }
    updatePoolBlock(b, id);
    return b.root;
  });
  if (!blocks.length) {
    const text = poolList && poolList.length
      ? "No sale of this room draws from a stock pool: pick one in the launch form."
      : "No stock pools yet: a merchant opens them on /merchant.";
    let empty = byId("pools-empty");
    if (!empty) empty = el("p", { class: "pool-empty", "data-testid": "pools-empty" });
    setText(empty, text);
    blocks.push(empty);
  }
  syncChildren(byId("pool-list"), blocks);
}

function updatePoolBlock(b, id) {
  const v = poolViews.get(id);
  const p = v || (poolList || []).find((x) => x.pool_id === id);
  setText(b.title, p?.title || id);
  setText(b.sub, p ? `${id} · ${p.sku} · ${formatMoney(p.unit_price, p.currency || "EUR")}` : id);
  b.picked.hidden = byId("sale-pool").value !== id;
  const rows = v?.sales || [];
  const here = rows.filter((r) => r.room_id === roomId);
  const away = rows.filter((r) => r.room_id !== roomId);
  const sum = (rs, k) => rs.reduce((a, r) => a + num(r[k]), 0);
  const stat = (key, value) => {
    setText(b[key], value === null || value === undefined ? "–" : fmtInt(value));
    b[key].dataset.value = value === null || value === undefined ? "" : String(value);
  };
  stat("on-hand", p?.on_hand);
  stat("available", p?.available);
  stat("here", v ? sum(here, "allocated") : null);
  stat("elsewhere", v ? sum(away, "allocated") : null);
  stat("channel-held", p?.channel_held);
  stat("sold", v ? sum(rows, "sold") + num(v.channel_sold) : null);

  const items = here.slice().reverse().map((r) => {  // newest first
    let e = b.saleEls.get(r.sale_id);
    if (!e) { e = buildPoolSale(r); b.saleEls.set(r.sale_id, e); }
    const live = !r.ended;
    e.root.dataset.state = live ? "live" : "ended";
    for (const k of ["left", "allocated", "held", "sold"]) setText(e[k], fmtInt(r[k === "left" ? "available" : k]));
    e.state.dataset.state = live ? "open" : "closed";
    setText(e.state, live ? "live" : "ended");
    e.form.hidden = !live;
    const n = returnedOf(r.sale_id);
    e.returned.hidden = live || n === null;
    e.returned.dataset.units = n === null ? "" : String(n);
    setText(e.returned, n === null ? "" : `↩ ${fmtInt(n)} returned to the pool`);
    return e.root;
  });
  for (const sid of Array.from(b.saleEls.keys())) if (!here.some((r) => r.sale_id === sid)) b.saleEls.delete(sid);
  syncChildren(b.sales, items);

  // elsewhere: other rooms' sales and the channels, in one line
  const byRoom = new Map();
  for (const r of away) byRoom.set(r.room_id, (byRoom.get(r.room_id) || 0) + num(r.allocated));
  const parts = Array.from(byRoom, ([room, n]) => `room ${room}: ${fmtInt(n)}`);
  for (const c of v?.channels || []) parts.push(`${c.channel}: ${fmtInt(c.units)} sold`);
  setText(b.away, parts.length ? `Elsewhere · ${parts.join(" · ")}` : "");
  b.away.hidden = !parts.length;
}

// ---------------------------------------------------------------------------------------------
// actions

/** "CODE: message" of an HTTP or WebSocket error (LiveSaleError's message already starts with its code). */
function errText(err) {
  const code = err.code || "ERROR";
  const msg = String(err.message || "").replace(new RegExp(`^${code}:\\s*`), "");
  return msg ? `${code}: ${msg}` : code;
}
function showError(errEl, err) {
  if (!errEl) return;
  errEl.textContent = err ? errText(err) : "";
  if (err) errEl.dataset.code = err.code || "ERROR"; else delete errEl.dataset.code;
}

/** Run an action: a toast on success (okText) or failure; a typed error also stays in errEl until the next try. */
async function act(fn, okText, errEl = null) {
  showError(errEl, null);
  try {
    const res = await fn();
    if (okText) toast(okText, "ok");
    return res;
  } catch (err) {
    toast(errText(err), "error");
    showError(errEl, err);
    return null;
  } finally {
    scheduleRender();
  }
}

function wire() {
  byId("viewer-link").href = `/rooms/${encodeURIComponent(roomId)}`;
  // the show report (report.js) in a new tab: the host token goes along in the fragment (#token=), which
  // the report page stores in its tab and takes out of the address bar; the link's own href has no token
  const reportUrl = `/rooms/${encodeURIComponent(roomId)}/report`;
  byId("report-link").href = reportUrl;
  byId("report-link").addEventListener("click", (ev) => {
    if (!token) return;
    ev.preventDefault();
    window.open(`${reportUrl}#token=${encodeURIComponent(token)}`, "_blank", "noopener");
  });
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
    const variants = pickedVariants();
    const poolId = variants.length ? "" : String(f.get("pool") || "");
    const pool = poolId ? (poolList || []).find((p) => p.pool_id === poolId) : null;
    const errEl = byId("launch-error");
    if (poolId && pool && product && (pool.sku !== product.sku || pool.currency !== (product.currency || "EUR"))) {
      showError(errEl, { code: "SKU_MISMATCH", message: `pool ${poolId} holds ${pool.sku} in ${pool.currency}; the product is ${product.sku}` });
      return;
    }
    const btn = byId("launch-button");
    btn.disabled = true;
    setText(byId("launch-result"), "");
    // launch_sale's `pool` field: the units move out of the pool, or POOL_SHORT and nothing happens;
    // `variants`: one sale of several variants, each from its pool, all or nothing (ok {group, sales})
    const res = await act(() => (variants.length ? client.request("launch_sale", { ...opts, variants })
      : poolId ? client.request("launch_sale", { ...opts, pool: poolId }) : client.launchSale(opts)), null, errEl);
    btn.disabled = false;
    if (res && variants.length) {
      const n = (res.sales || []).length;
      setText(byId("launch-result"), `Launched ${res.group || ""} · ${n} variant${n === 1 ? "" : "s"}`);
      toast(`Sale of ${n} variant${n === 1 ? "" : "s"} launched: opens in ${opts.starts_in_s}s`, "ok");
      for (const s of res.sales || []) client._upsertSale(s);
      poll(false);
    } else if (res) {
      const id = res.sale?.sale_id || res.sale || "";
      setText(byId("launch-result"), `Launched ${id}${poolId ? ` from pool ${poolId}` : ""}`);
      toast(`${opts.members_only ? "Members-only flash sale" : "Flash sale"} launched${poolId ? ` from pool ${poolId}` : ""}: opens in ${opts.starts_in_s}s`, "ok");
      if (res.sale && typeof res.sale === "object") client._upsertSale(res.sale);
      poll(false);
    }
  });

  byId("sale-product").addEventListener("change", () => { poolPickerKey = ""; renderPoolPicker(); renderVariantPicker(); });
  byId("sale-variants").addEventListener("change", () => renderVariantPicker());
  byId("sale-pool").addEventListener("change", () => { poolPickerKey = ""; render(); pollPools(); });

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

// ---------------------------------------------------------------------------------------------
// live extras (docs/PROTOCOL.md Interaction): fan teams, polls, coupon drops, lucky draws. The forms send
// the host actions over the WebSocket (set_teams, open_poll, close_poll, drop_coupons, end_drop,
// create_draw); the lists show the room's objects from livesale.js (client.teams, leaderboard, polls,
// drops, draws), their counts live from the ticks.

const TEAM_COLOURS = ["#ff3d71", "#3d8bff", "#2bd49b", "#ffc247", "#b26bff", "#ff8a3d"];
const TEAM_BADGES = ["🔥", "🌊", "🍀", "⭐", "💜", "🦊"];
const hostItemEls = new Map();  // "poll:<id>" | "drop:<id>" | "draw:<id>" -> {root, update}
let teamRowsFilled = false;
let teamOptionsKey = "";

function slug(text, used) {
  const base = String(text || "").toLowerCase().normalize("NFKD").replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "")
    .replace(/-{2,}/g, "-").slice(0, 30) || "team";
  let id = base;
  for (let i = 2; used.has(id); i++) id = `${base}-${i}`;
  used.add(id);
  return id;
}

function teamRow(t = {}, i = 0) {
  const row = el("div", { class: "team-row", "data-testid": "team-row", "data-team-id": t.team_id || "" },
    el("input", { class: "team-row-badge", "data-testid": "team-badge-input", maxlength: "8", value: t.badge || TEAM_BADGES[i % TEAM_BADGES.length],
                  "aria-label": "Badge", required: true }),
    el("input", { class: "team-row-name", "data-testid": "team-name-input", maxlength: "40", value: t.name || "",
                  placeholder: `Team ${i + 1}`, "aria-label": "Team name", required: true }),
    el("input", { class: "team-row-colour", "data-testid": "team-colour-input", type: "color",
                  value: t.colour || TEAM_COLOURS[i % TEAM_COLOURS.length], "aria-label": "Colour" }),
    el("button", { class: "btn btn-small", type: "button", "data-testid": "team-remove", "aria-label": "Remove this team",
                   onclick: (ev) => { ev.currentTarget.closest(".team-row").remove(); } }, "✕"));
  return row;
}

/** The editor's rows: the room's teams (once known), else two empty ones. */
function fillTeamRows(force = false) {
  if (teamRowsFilled && !force) return;
  const teams = client?.teams?.teams || [];
  if (!teams.length && !force && !client?.joined) return;
  teamRowsFilled = true;
  const rows = teams.length ? teams.map((t, i) => teamRow(t, i)) : [teamRow({}, 0), teamRow({}, 1)];
  byId("team-rows").replaceChildren(...rows);
  if (client?.teams) {
    byId("teams-allow-switch").checked = client.teams.allow_switch !== false;
    byId("teams-cooldown").value = String(client.teams.switch_cooldown_s ?? 600);
  }
}

function readTeamRows() {
  const used = new Set();
  const rows = Array.from(byId("team-rows").querySelectorAll(".team-row"));
  for (const r of rows) if (r.dataset.teamId) used.add(r.dataset.teamId);
  return rows.map((r) => ({
    team_id: r.dataset.teamId || slug(r.querySelector(".team-row-name").value, used),
    name: r.querySelector(".team-row-name").value.trim(),
    colour: r.querySelector(".team-row-colour").value,
    badge: r.querySelector(".team-row-badge").value.trim(),
  }));
}

function teamName(id) {
  const t = client?.teamOf(id);
  return t ? `${t.badge} ${t.name}` : id;
}

function renderTeamBoard() {
  const tbody = byId("team-board").querySelector("tbody");
  const teams = client?.teams?.teams || [];
  setText(byId("teams-count"), teams.length ? String(teams.length) : "");
  const rows = client?.leaderboard?.length ? client.leaderboard
    : teams.map((t) => ({ team_id: t.team_id, members: 0, present: 0, likes: 0, orders: 0, gmv: {} }));
  const trs = rows.filter((r) => client.teamOf(r.team_id)).map((r, i) => {
    const t = client.teamOf(r.team_id);
    const gmv = Object.entries(r.gmv || {}).map(([c, v]) => formatMoney(v, c)).join(" + ") || "–";
    return el("tr", { "data-testid": "team-board-row", "data-team-id": r.team_id },
      el("td", { class: "team-board-rank" }, String(i + 1)),
      el("td", {}, el("span", { class: "team-dot", style: `--team:${t.colour}` }), `${t.badge} ${t.name}`),
      el("td", { class: "num", "data-testid": "team-board-members" }, fmtInt(r.members)),
      el("td", { class: "num", "data-testid": "team-board-present" }, fmtInt(r.present)),
      el("td", { class: "num" }, fmtInt(r.likes)),
      el("td", { class: "num" }, fmtInt(r.orders)),
      el("td", { class: "num" }, gmv));
  });
  if (!trs.length) trs.push(el("tr", { class: "empty" }, el("td", { colspan: "7" }, "No teams yet: define them below.")));
  const key = JSON.stringify(rows) + JSON.stringify(teams);
  if (tbody.dataset.key !== key) { tbody.dataset.key = key; tbody.replaceChildren(...trs); }
  // the team choices of the drop and draw forms
  const optsKey = teams.map((t) => `${t.team_id}:${t.badge}:${t.name}`).join("|");
  if (optsKey !== teamOptionsKey) {
    teamOptionsKey = optsKey;
    for (const sel of [byId("drop-team"), byId("draw-team")]) {
      const cur = sel.value;
      sel.replaceChildren(el("option", { value: "" }, "Everyone"),
        ...teams.map((t) => el("option", { value: t.team_id }, `${t.badge} ${t.name}`)));
      if (teams.some((t) => t.team_id === cur)) sel.value = cur;
    }
  }
}

function couponText(c) {
  return c.kind === "percent" ? `${c.value}% off` : `${formatMoney(c.value, c.currency || "EUR")} off`;
}

/** A keyed list of items (host-polls, host-drops, host-draws): built once per id, updated in place. */
function syncItems(box, kind, objs, build, update) {
  const nodes = objs.map((o) => {
    const key = `${kind}:${o[`${kind}_id`]}`;
    let item = hostItemEls.get(key);
    if (!item) { item = build(o); hostItemEls.set(key, item); }
    update(item, o);
    return item.root;
  });
  if (!nodes.length) nodes.push(byId(`${kind}s-empty`) || el("p", { class: "pool-empty", "data-testid": `${kind}s-empty` },
    { poll: "No polls yet.", drop: "No coupon drops yet.", draw: "No draws yet." }[kind]));
  syncChildren(box, nodes);
}

function buildHostPoll(p) {
  const e = { bars: [] };
  e.state = el("span", { class: "state-tag", "data-testid": "host-poll-state" });
  e.timer = el("span", { class: "host-item-timer", "data-testid": "host-poll-timer" });
  e.total = el("span", { "data-testid": "host-poll-total" });
  e.close = el("button", { class: "btn btn-small btn-danger", type: "button", "data-testid": "host-poll-close",
    onclick: () => act(() => client.closePoll(p.poll_id), "Poll closed") }, "Close");
  const rows = (p.options || []).map((label, i) => {
    const b = { fill: el("div", { class: "host-bar-fill" }), n: el("span", { class: "host-bar-n", "data-testid": `host-poll-count-${i}` }, "0") };
    e.bars.push(b);
    return el("div", { class: "host-bar", "data-option": String(i) },
      el("span", { class: "host-bar-label" }, label), el("div", { class: "host-bar-track" }, b.fill), b.n);
  });
  e.root = el("div", { class: "host-item", "data-testid": `host-poll-${p.poll_id}`, "data-poll-id": p.poll_id },
    el("div", { class: "host-item-head" }, el("strong", { class: "host-item-title" }, p.question), e.state, e.timer),
    ...rows,
    el("div", { class: "host-item-foot" }, e.total, e.close));
  return e;
}

function updateHostPoll(e, p) {
  const now = client.serverNow();
  const phase = client.pollPhase(p, now);
  e.root.dataset.state = phase;
  e.state.dataset.state = phase === "open" ? "open" : "closed";
  setText(e.state, phase);
  setText(e.timer, phase === "open" ? `ends in ${fmtSecs(p.ends_at - now)}` : "");
  const counts = p.counts || [];
  const total = typeof p.total === "number" ? p.total : counts.reduce((a, n) => a + num(n), 0);
  const winners = phase === "closed" ? p.winners || [] : [];
  e.bars.forEach((b, i) => {
    const n = num(counts[i]);
    b.fill.style.width = `${total ? (n / total) * 100 : 0}%`;
    setText(b.n, fmtInt(n));
    b.n.dataset.count = String(n);
    b.fill.parentElement.parentElement.dataset.winner = winners.includes(i) ? "true" : "false";
  });
  setText(e.total, `${fmtInt(total)} ${total === 1 ? "vote" : "votes"}`);
  e.total.dataset.total = String(total);
  e.close.hidden = phase !== "open";
}

function buildHostDrop(d) {
  const e = {};
  const stat = (k, label) => { e[k] = el("span", { "data-testid": `host-drop-${k}` }, "0"); return el("span", { class: "host-stat" }, e[k], ` ${label}`); };
  e.state = el("span", { class: "state-tag", "data-testid": "host-drop-state" });
  e.timer = el("span", { class: "host-item-timer", "data-testid": "host-drop-timer" });
  e.bar = el("div", { class: "host-bar-fill" });
  e.end = el("button", { class: "btn btn-small btn-danger", type: "button", "data-testid": "host-drop-end",
    onclick: () => act(() => client.endDrop(d.drop_id), "Drop ended") }, "End");
  e.root = el("div", { class: "host-item", "data-testid": `host-drop-${d.drop_id}`, "data-drop-id": d.drop_id },
    el("div", { class: "host-item-head" }, el("strong", { class: "host-item-title" }, couponText(d)), e.state, e.timer),
    el("div", { class: "host-item-sub" }, [d.team ? `fans of ${teamName(d.team)}` : "everyone",
      d.min_spend ? `from ${formatMoney(d.min_spend, d.currency || "EUR")}` : null,
      (d.products || []).length ? `on ${d.products.join(", ")}` : null, d.drop_id].filter(Boolean).join(" · ")),
    el("div", { class: "host-bar" }, el("div", { class: "host-bar-track" }, e.bar)),
    el("div", { class: "host-item-foot" }, el("span", { class: "host-stats" }, stat("claimed", "claimed"), stat("redeemed", "redeemed"),
      stat("left", "left")), e.end));
  return e;
}

function updateHostDrop(e, d) {
  const now = client.serverNow();
  const phase = client.dropPhase(d, now);
  e.root.dataset.state = phase;
  e.state.dataset.state = phase === "claimed_out" ? "sold_out" : phase === "ended" ? "closed" : phase;
  setText(e.state, phase.replace("_", " "));
  setText(e.timer, phase === "scheduled" ? `opens in ${fmtSecs(d.starts_at - now)}` : phase === "open" ? `closes in ${fmtSecs(d.claim_until - now)}` : "");
  const count = num(d.count);
  const claimed = num(d.claimed);
  const left = typeof d.left === "number" ? d.left : Math.max(0, count - claimed);
  for (const [k, v] of [["claimed", claimed], ["redeemed", num(d.redeemed)], ["left", left]]) {
    setText(e[k], fmtInt(v));
    e[k].dataset.value = String(v);
  }
  e.bar.style.width = `${count ? Math.min(100, (claimed / count) * 100) : 0}%`;
  e.end.hidden = !(phase === "open" || phase === "scheduled");
}

function buildHostDraw(w) {
  const e = {};
  e.state = el("span", { class: "state-tag", "data-testid": "host-draw-state" });
  e.timer = el("span", { class: "host-item-timer", "data-testid": "host-draw-timer" });
  e.entrants = el("span", { "data-testid": "host-draw-entrants" }, "0");
  e.winners = el("span", { class: "host-draw-winners", "data-testid": "host-draw-winners" });
  e.redraws = el("span", { class: "host-item-sub", "data-testid": "host-draw-redraws" });
  e.verify = el("a", { class: "draw-link", "data-testid": "host-draw-verify", href: `/verify/${encodeURIComponent(w.draw_id)}`,
                       target: "_blank", rel: "noopener" }, "Verify");
  e.list = el("a", { class: "draw-link", "data-testid": "host-draw-entrants-link", target: "_blank", rel: "noopener",
                     href: `/api/draws/${encodeURIComponent(w.draw_id)}/entrants` }, "Entrants (JSON)");
  const units = w.prize?.units || 1;
  const prize = w.prize?.coupon ? `a ${couponText(w.prize.coupon)} coupon`
    : `${units} ${units === 1 ? "unit" : "units"} of pool ${w.prize?.pool || "?"}`;
  const r = w.rule || {};
  const rule = [r.keyword ? `comment “${r.keyword}”` : null, r.team ? `fans of ${teamName(r.team)}` : null,
    r.watched_s ? `watched ${fmtSecs(r.watched_s * 1000)}` : null, r.bought ? "bought here" : null, "present at the draw"].filter(Boolean).join(" · ");
  e.root = el("div", { class: "host-item", "data-testid": `host-draw-${w.draw_id}`, "data-draw-id": w.draw_id },
    el("div", { class: "host-item-head" }, el("strong", { class: "host-item-title" }, w.title), e.state, e.timer),
    el("div", { class: "host-item-sub" }, `${w.winners} ${w.winners === 1 ? "winner" : "winners"}, each ${prize} · ${rule}`),
    el("div", { class: "host-item-sub mono", title: "SHA-256 of the secret seed, published before the entries" },
      `commitment ${String(w.commitment || "").slice(0, 16)}…`),
    el("div", { class: "host-item-foot" }, el("span", { class: "host-stats" }, el("span", { class: "host-stat" }, e.entrants, " entered")),
      e.winners),
    e.redraws,
    el("div", { class: "host-item-foot" }, e.verify, e.list));
  return e;
}

function updateHostDraw(e, w) {
  const now = client.serverNow();
  const phase = client.drawPhase(w, now);
  e.root.dataset.state = phase;
  e.state.dataset.state = phase === "drawn" ? "closed" : phase === "open" ? "open" : "scheduled";
  setText(e.state, phase);
  setText(e.timer, phase === "open" ? `entries close in ${fmtSecs(w.entry_until - now)}` : phase === "closing" ? "drawing…" : "");
  setText(e.entrants, fmtInt(w.entrants ?? 0));
  e.entrants.dataset.value = String(num(w.entrants));
  const ids = w.winner_ids || [];
  setText(e.winners, phase === "drawn" ? (ids.length ? `winners: ${ids.join(", ")}` : "no entrants: no winner") : "");
  const rounds = w.redraws || [];
  setText(e.redraws, rounds.length ? rounds.map((r) => `redraw ${r.round}: ${(r.replaced || []).join(", ")} → ${(r.added || []).join(", ") || "nobody left"}`).join(" · ") : "");
  e.redraws.hidden = !rounds.length;
  e.verify.hidden = phase !== "drawn";
  e.list.hidden = phase !== "drawn";
}

let drawPoolKey = "";
let dropProductKey = "";
function renderExtraForms() {
  // the draw form's pools: every pool this host may use (GET /api/pools)
  const pools = poolList || [];
  const key = pools.map((p) => `${p.pool_id}:${p.available}`).join("|");
  if (key !== drawPoolKey) {
    drawPoolKey = key;
    const sel = byId("draw-pool");
    const cur = sel.value;
    sel.replaceChildren(...(pools.length ? pools.map((p) => el("option", { value: p.pool_id }, `${p.title || p.pool_id} · ${fmtInt(p.available)} available`))
      : [el("option", { value: "" }, "No stock pools: pick a coupon prize")]));
    if (pools.some((p) => p.pool_id === cur)) sel.value = cur;
  }
  const products = allProducts();
  const pkey = products.map((p) => p.product_id).join("|");
  if (pkey !== dropProductKey) {
    dropProductKey = pkey;
    const sel = byId("drop-product");
    const cur = sel.value;
    sel.replaceChildren(el("option", { value: "" }, "Every deal of this live"),
      ...products.map((p) => el("option", { value: p.product_id }, p.title || p.sku)));
    if (products.some((p) => p.product_id === cur)) sel.value = cur;
  }
  const percent = byId("drop-kind").value === "percent";
  setText(byId("drop-value-label"), percent ? "Value (%)" : `Value (${byId("drop-currency").value || "EUR"})`);
  const coupon = byId("draw-prize-kind").value === "coupon";
  for (const label of byId("draw-form").querySelectorAll("[data-prize]")) label.hidden = (label.dataset.prize === "coupon") !== coupon;
}

function renderExtras() {
  if (!client) return;
  fillTeamRows();
  renderTeamBoard();
  renderExtraForms();
  const polls = client.pollsList();
  setText(byId("polls-count"), polls.length ? String(polls.length) : "");
  syncItems(byId("host-polls"), "poll", polls.slice(0, 8), buildHostPoll, updateHostPoll);
  const drops = Array.from(client.drops.values()).sort((a, b) => num(b.starts_at) - num(a.starts_at));
  setText(byId("drops-count"), drops.length ? String(drops.length) : "");
  syncItems(byId("host-drops"), "drop", drops.slice(0, 8), buildHostDrop, updateHostDrop);
  const draws = Array.from(client.draws.values()).sort((a, b) => num(b.opened_at) - num(a.opened_at));
  setText(byId("draws-count"), draws.length ? String(draws.length) : "");
  syncItems(byId("host-draws"), "draw", draws.slice(0, 8), buildHostDraw, updateHostDraw);
}

/** Minor units from a form's amount in a currency's major units ("5" EUR -> 500). */
function minor(value, currency) {
  return Math.round(parseFloat(value) * 10 ** minorDigits(currency || "EUR"));
}

function wireExtras() {
  byId("team-add").addEventListener("click", () => {
    const rows = byId("team-rows");
    if (rows.children.length >= 30) return;
    rows.append(teamRow({}, rows.children.length));
  });
  byId("teams-editor").addEventListener("toggle", () => fillTeamRows());
  byId("teams-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const teams = readTeamRows();
    const res = await act(() => client.setTeams(teams, {
      allow_switch: byId("teams-allow-switch").checked,
      switch_cooldown_s: parseInt(byId("teams-cooldown").value, 10) || 0,
    }), `${teams.length} teams saved`, byId("teams-error"));
    if (res) {
      setText(byId("teams-result"), `Saved ${teams.length} teams`);
      // the rows keep the ids they were saved with (a later save edits the same teams)
      byId("team-rows").querySelectorAll(".team-row").forEach((r, i) => { if (teams[i]) r.dataset.teamId = teams[i].team_id; });
    }
  });

  byId("poll-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const options = byId("poll-options-input").value.split("\n").map((o) => o.trim()).filter(Boolean);
    const res = await act(() => client.openPoll({
      question: byId("poll-question-input").value.trim(), options,
      duration_s: parseInt(byId("poll-duration").value, 10),
    }), "Poll opened", byId("poll-error"));
    if (res) {
      setText(byId("poll-result"), `Opened ${res.poll?.poll_id || ""}`);
      byId("poll-question-input").value = "";
      byId("poll-options-input").value = "";
    }
  });

  byId("drop-kind").addEventListener("change", renderExtraForms);
  byId("drop-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const kind = byId("drop-kind").value;
    const currency = (byId("drop-currency").value || "EUR").toUpperCase();
    const opts = {
      kind, count: parseInt(byId("drop-count").value, 10), currency,
      value: kind === "percent" ? parseInt(byId("drop-value-input").value, 10) : minor(byId("drop-value-input").value, currency),
      claim_s: parseInt(byId("drop-claim-s").value, 10),
      starts_in_s: parseInt(byId("drop-starts-in").value, 10) || 0,
      valid_s: parseInt(byId("drop-valid-s").value, 10),
    };
    const min = byId("drop-min-spend").value.trim();
    if (min) opts.min_spend = minor(min, currency);
    if (byId("drop-team").value) opts.team = byId("drop-team").value;
    if (byId("drop-product").value) opts.products = [byId("drop-product").value];
    const res = await act(() => client.dropCoupons(opts), "Coupons dropped", byId("drop-error"));
    if (res) setText(byId("drop-result"), `Dropped ${res.drop?.drop_id || ""}`);
  });

  byId("draw-prize-kind").addEventListener("change", renderExtraForms);
  byId("draw-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    let prize;
    if (f.get("prize_kind") === "coupon") {
      const kind = String(f.get("coupon_kind"));
      const value = String(f.get("coupon_value"));
      prize = { coupon: { kind, value: kind === "percent" ? parseInt(value, 10) : minor(value, "EUR") } };
    } else {
      if (!f.get("pool")) { showError(byId("draw-error"), { code: "INVALID", message: "pick a stock pool, or a coupon prize" }); return; }
      prize = { pool: String(f.get("pool")), units: parseInt(String(f.get("units")), 10) || 1 };
    }
    const rule = {};
    const kw = String(f.get("keyword") || "").trim();
    if (kw) rule.keyword = kw;
    if (f.get("team")) rule.team = String(f.get("team"));
    const watched = parseInt(String(f.get("watched_s") || "0"), 10);
    if (watched > 0) rule.watched_s = watched;
    if (f.get("bought")) rule.bought = true;
    const res = await act(() => client.createDraw({
      title: String(f.get("title")).trim(), winners: parseInt(String(f.get("winners")), 10),
      entry_s: parseInt(String(f.get("entry_s")), 10), prize, rule,
      pay_within_s: parseInt(String(f.get("pay_within_s")), 10),
    }), "Draw started", byId("draw-error"));
    if (res) setText(byId("draw-result"), `Started ${res.draw?.draw_id || ""}`);
  });
}

// ---------------------------------------------------------------------------------------------
// Sharing (docs/CLIENT.md "Share & earn"; docs/PROTOCOL.md Share-to-earn): GET /api/rooms/{room}/sharing
// every 5 s while signed in: the room's orders by source (direct, a share link, a mini-shop, another
// channel), its top sharers and the per-product commission rates, with an editor (PUT
// /api/rooms/{room}/products/{product}/commission: basis points, shown as %). "Payouts CSV" saves
// GET /api/payouts.csv?room= (fetched with the token, which is sent in a header).

const SHARING_MS = 5000;
const SHARING_SOURCES = [["direct", "Direct"], ["link", "Share links"], ["shop", "Mini-shops"], ["channel", "Other channels"]];
let sharing = null;             // the last GET /api/rooms/{room}/sharing
let sharingAt = 0;
let sharingBusy = false;
const rateRows = new Map();     // product id -> {tr, input, save}
const rateDirty = new Set();    // product ids whose rate is being edited (not overwritten by a poll)

function bpsPct(bps) {
  return (num(bps) / 100).toLocaleString(undefined, { maximumFractionDigits: 2 });
}

async function pollSharing(force = false) {
  if (!token || byId("panel").hidden || sharingBusy) return;
  if (!force && Date.now() - sharingAt < SHARING_MS) return;
  sharingBusy = true;
  try {
    sharing = await api("GET", `/api/rooms/${encodeURIComponent(roomId)}/sharing`);
    showError(byId("sharing-error"), null);
  } catch (err) {
    showError(byId("sharing-error"), err);
  } finally {
    sharingAt = Date.now();
    sharingBusy = false;
    renderSharing();
  }
}

function sharingRow(testid, cells, attrs = {}) {
  return el("tr", { "data-testid": testid, ...attrs },
    ...cells.map(([text, cls, id]) => el("td", { class: cls || null, "data-testid": id || null }, text)));
}

function renderSharing() {
  const s = sharing;
  setText(byId("sharing-updated"), s ? `updated ${new Date(sharingAt).toLocaleTimeString()}` : "");
  // orders by source: one row per source (its currencies' GMV side by side)
  const by = new Map();
  for (const r of s?.by_source || []) {
    const a = by.get(r.source) || { orders: 0, units: 0, gmv: [] };
    a.orders += num(r.orders);
    a.units += num(r.units);
    a.gmv.push(formatMoney(num(r.gmv), r.currency || "EUR"));
    by.set(r.source, a);
  }
  const known = new Set(SHARING_SOURCES.map(([k]) => k));
  const sources = [...SHARING_SOURCES, ...Array.from(by.keys()).filter((k) => !known.has(k)).map((k) => [k, k])];
  byId("sharing-sources").querySelector("tbody").replaceChildren(...sources.map(([key, label]) => {
    const a = by.get(key) || { orders: 0, units: 0, gmv: [] };
    return sharingRow(`sharing-source-${key}`, [[label], [fmtInt(a.orders), "num", "sharing-orders"],
      [fmtInt(a.units), "num", "sharing-units"], [a.gmv.join(" + ") || "–", "num", "sharing-gmv"]],
    { "data-orders": a.orders, "data-units": a.units });
  }));
  // top sharers
  const sharers = s?.top_sharers || [];
  const body = byId("sharing-sharers").querySelector("tbody");
  if (!sharers.length) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "4" }, s ? "No orders through share links or mini-shops yet." : "–")));
  } else {
    body.replaceChildren(...sharers.map((r) => sharingRow("sharing-sharer", [[r.sharer, null, "sharing-sharer-id"],
      [fmtInt(r.orders), "num", "sharing-sharer-orders"], [formatMoney(num(r.sales), r.currency || "EUR"), "num", "sharing-sharer-sales"],
      [formatMoney(num(r.commission), r.currency || "EUR"), "num", "sharing-sharer-commission"]],
    { "data-sharer": r.sharer, "data-commission": num(r.commission) })));
  }
  // the commission per product (blank: the default)
  const def = num(s?.default_bps);
  setText(byId("sharing-default"), s ? `A product without a rate of its own earns sharers the default ${bpsPct(def)}%.` : "");
  const products = allProducts();
  const tbody = byId("sharing-rates").querySelector("tbody");
  const ids = new Set(products.map((p) => p.product_id));
  for (const [id, row] of rateRows) if (!ids.has(id)) { row.tr.remove(); rateRows.delete(id); rateDirty.delete(id); }
  for (const p of products) {
    let row = rateRows.get(p.product_id);
    if (!row) {
      const input = el("input", { type: "number", min: "0", max: "100", step: "0.01", inputmode: "decimal",
        "data-testid": "sharing-rate-input", "aria-label": `Commission of ${p.title || p.product_id} in percent`,
        style: "width:90px;text-align:right" });
      const save = el("button", { class: "btn btn-small", type: "button", "data-testid": "sharing-rate-save",
        "aria-label": `Save the commission of ${p.title || p.product_id}` }, "Save");
      input.addEventListener("input", () => rateDirty.add(p.product_id));
      input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); saveRate(p.product_id, input, save); } });
      save.addEventListener("click", () => saveRate(p.product_id, input, save));
      const tr = el("tr", { "data-testid": `sharing-rate-${p.product_id}`, "data-product-id": p.product_id },
        el("td", {}, el("div", { class: "cell-title" }, p.title || p.product_id), el("div", { class: "cell-sub pool-hint" }, p.product_id)),
        el("td", { class: "num" }, input), el("td", { class: "num" }, save));
      row = { tr, input, save };
      rateRows.set(p.product_id, row);
      tbody.append(tr);
    }
    const bps = s?.rates?.[p.product_id];
    row.tr.dataset.bps = bps === undefined ? "" : String(bps);
    row.input.placeholder = s ? bpsPct(def) : "";  // blank: the default
    if (!rateDirty.has(p.product_id) && document.activeElement !== row.input) {
      const v = bps === undefined ? "" : String(num(bps) / 100);
      if (row.input.value !== v) row.input.value = v;
    }
  }
}

async function saveRate(productId, input, btn) {
  const errEl = byId("sharing-error");
  const pct = parseFloat(input.value);
  if (input.value.trim() === "" || !Number.isFinite(pct) || pct < 0 || pct > 100) {
    showError(errEl, { code: "INVALID", message: "a commission is a percentage from 0 to 100" });
    return;
  }
  btn.disabled = true;
  const res = await act(() => api("PUT", `/api/rooms/${encodeURIComponent(roomId)}/products/${encodeURIComponent(productId)}/commission`,
    { commission_bps: Math.round(pct * 100) }), `Commission of ${productId}: ${bpsPct(Math.round(pct * 100))}%`, errEl);
  btn.disabled = false;
  if (res) {
    rateDirty.delete(productId);
    if (sharing) sharing.rates = { ...(sharing.rates || {}), [productId]: res.commission_bps };
    renderSharing();
    pollSharing(true);
  }
}

async function downloadRoomPayouts() {
  const btn = byId("sharing-payouts");
  btn.disabled = true;
  try {
    const res = await fetch(`/api/payouts.csv?room=${encodeURIComponent(roomId)}`, { headers: { Authorization: `Bearer ${token}` } });
    if (!res.ok) {
      const body = await res.json().catch(() => null);
      throw Object.assign(new Error(body?.error?.message || `HTTP ${res.status}`), { code: body?.error?.code || `HTTP_${res.status}` });
    }
    const href = URL.createObjectURL(await res.blob());
    const a = el("a", { href, download: `payouts-${roomId}.csv`, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(href), 60000);
  } catch (err) {
    toast(errText(err), "error");
    showError(byId("sharing-error"), err);
  } finally {
    btn.disabled = false;
  }
}

function wireSharing() {
  byId("sharing-payouts").addEventListener("click", downloadRoomPayouts);
  setInterval(() => pollSharing(), 1000);  // reads every 5 s (at once after signing in)
}

wire();
wireExtras();
wireSharing();
const initial = readToken(TOKEN_KEY);
if (initial) signIn(initial); else showSignin();
