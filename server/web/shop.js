// A shopkeeper's mini-shop (/shop/<shop_id>; docs/CLIENT.md "Share & earn"): the shop's title and
// products (GET /api/shops/{shop}: merchants' stock pools the shopkeeper picked), a Buy per product and
// my orders in this shop. Buy reserves one unit in the shop's channel (POST /api/channels/shop:<shop>/holds)
// and pays it as the viewer page does: `instant` payments confirm it at once (POST /api/holds/{hold}/pay);
// with a provider, checkout (POST /api/holds/{hold}/checkout) opens the provider's page in a new window
// (opened during the tap, so popup blockers let it through) and the page follows the order until it is
// settled (GET /api/orders/{order}). The shopkeeper earns the pool's commission on each order.
// Who buys: the platform's token handed over in #token= (this tab), else a guest token of this browser
// (the viewer page's, or POST /api/viewer-token when the server offers guests).
import { formatMoney } from "/static/livesale.js";
import { apiWith, byId, el, hue, identityOf, setText, toast, tokenFromFragment } from "/static/ui.js";

const shopId = (() => {
  const m = location.pathname.match(/\/shop\/([^/?#]+)/);
  return m ? decodeURIComponent(m[1]) : "";
})();

const ID_KEY = "livesale.viewer";          // the guest identity (localStorage, shared with the viewer page)
const NAME_KEY = "livesale.name";
const HANDOFF_KEY = "livesale.handoff";    // the platform's token (sessionStorage, this tab)
const WATCH_MS = 10 * 60000;               // how long a payment is followed on this page
const STATUS_TEXT = {
  SOLD_OUT: "Sold out.", LIMIT_REACHED: "You reached the limit for this product.", NOT_FOUND: "This product is not sold here any more.",
};

let identity = null;       // {token, user, name, guest, platform} or null
let limits = null;         // the server's hello.limits ({payments, guests, ...}) or null (not known)
let shop = null;           // GET /api/shops/{shop}
const busy = new Set();    // pool ids with a buy or payment in flight
const holds = new Map();   // pool id -> {hold, pay_by, state: held|paying|paid|settled|expired, order?}
const notes = new Map();   // pool id -> {text, kind}
let myOrders = [];
let ready = false;         // the payment mode is known (or could not be read): Buy can open the right flow

const api = apiWith(() => identity?.token || "");

// ---------------------------------------------------------------------------------------------
// identity (the viewer page's rules, docs/CLIENT.md "Signing in: the token handoff")

function storedIdentity() {
  try {
    const handed = identityOf(sessionStorage.getItem(HANDOFF_KEY), true);
    if (handed) return handed;
    const id = JSON.parse(localStorage.getItem(ID_KEY) || "null");
    const fresh = id?.token ? identityOf(id.token, false) : null;
    return fresh ? { ...fresh, name: id.name || fresh.name } : null;
  } catch {
    return null;
  }
}

/** A guest token of this browser when the server offers them (hello.limits.guests, else GET /api/time). */
async function guestIdentity() {
  let offered = limits ? limits.guests === true : null;
  if (offered === null) {
    try { offered = (await (await fetch("/api/time")).json()).guests === true; } catch { offered = false; }
  }
  if (!offered) return null;
  const name = localStorage.getItem(NAME_KEY) || "Shopper";
  const res = await fetch("/api/viewer-token", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok || !body.token) {
    if (body.error?.code === "GUESTS_OFF") return null;
    throw new Error(body.error?.message || `no guest token (HTTP ${res.status})`);
  }
  const id = { ...identityOf(body.token, false), user: body.user, name: body.name || name };
  try {
    localStorage.setItem(ID_KEY, JSON.stringify({ token: id.token, user: id.user, name: id.name }));
    localStorage.setItem(NAME_KEY, id.name);
  } catch { /* storage disabled: this page view keeps it */ }
  return id;
}

/** The server's limits from the WebSocket's hello (sent on connect, before any join): the payment
 *  mode and whether guests are offered. null when it cannot be read within 5 s. */
function serverLimits() {
  return new Promise((resolve) => {
    let ws;
    let timer = null;
    const finish = (v) => {
      clearTimeout(timer);
      if (ws) { ws.onmessage = ws.onerror = ws.onclose = null; try { ws.close(); } catch { /* closed */ } }
      resolve(v);
    };
    try {
      ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`, "livesale.v1.json");
    } catch {
      resolve(null);
      return;
    }
    timer = setTimeout(() => finish(null), 5000);
    ws.onmessage = (ev) => {
      let m = null;
      try { m = JSON.parse(ev.data); } catch { /* not JSON */ }
      finish(m?.type === "hello" ? m.limits || {} : null);
    };
    ws.onerror = () => finish(null);
    ws.onclose = () => finish(null);
  });
}

function newRequestId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function shortId(id) {
  return id ? `#${String(id).split(".").pop().slice(0, 8).toUpperCase()}` : "";
}

// ---------------------------------------------------------------------------------------------
// buying

function note(poolId, text, kind = "info") {
  if (text) notes.set(poolId, { text, kind }); else notes.delete(poolId);
  renderItems();
}

async function onBuy(item) {
  const poolId = item.pool_id;
  if (busy.has(poolId)) return;
  const provider = limits && limits.payments && limits.payments !== "instant";
  const held = holds.get(poolId);
  const reuse = held && (held.state === "held" || held.state === "paying") && held.pay_by > Date.now();  // pay the one I have
  // with a provider: its page in a new window, opened now (during the tap) so popup blockers let it through
  const win = provider ? window.open("", "_blank") : null;
  busy.add(poolId);
  note(poolId, reuse ? "Opening the payment…" : "Reserving…", "wait");
  try {
    if (!identity) identity = await guestIdentity();
    renderWho();
    if (!identity) {
      if (win) win.close();
      show(byId("shop-signin"), true);
      note(poolId, "Buying needs signing in.", "error");
      return;
    }
    let hold = reuse ? held : null;
    if (!hold) {
      const r = await api("POST", `/api/channels/${shop.channel}/holds`, { pool: poolId, request_id: newRequestId(), qty: 1 });
      hold = { hold: r.hold_id, pay_by: r.pay_by, state: "held" };
      holds.set(poolId, hold);
    }
    await payHold(item, hold, win);
  } catch (err) {
    if (win) win.close();
    if (err.status === 401) { identity = null; try { localStorage.removeItem(ID_KEY); } catch { /* ignore */ } renderWho(); }
    note(poolId, STATUS_TEXT[err.code] || err.message, "error");
  } finally {
    busy.delete(poolId);
    renderItems();
  }
}

async function payHold(item, hold, win) {
  const poolId = item.pool_id;
  if (!limits || limits.payments === "instant") {
    try {
      await api("POST", `/api/holds/${encodeURIComponent(hold.hold)}/pay`, {});
      if (limits === null) limits = { payments: "instant" };
      hold.state = "paid";
      note(poolId, "Paid ✓ — confirming your order…", "ok");
      watchOrder(item, hold);
      return;
    } catch (err) {
      if (err.code !== "PAYMENT_REQUIRED") throw err;  // a provider after all: checkout below
      limits = { ...(limits || {}), payments: "provider" };
    }
  }
  let res;
  try {
    res = await api("POST", `/api/holds/${encodeURIComponent(hold.hold)}/checkout`, {});
  } catch (err) {
    if (err.code === "ALREADY_CONFIRMED") {
      if (win) win.close();
      hold.state = "paid";
      note(poolId, "Paid ✓ — confirming your order…", "ok");
      watchOrder(item, hold);
      return;
    }
    if (err.code === "EXPIRED") { hold.state = "expired"; holds.delete(poolId); }
    throw err;
  }
  if (!res.redirect_url && res.amount === 0) {  // nothing to pay: confirmed at once
    if (win) win.close();
    hold.state = "paid";
    note(poolId, "Confirmed ✓", "ok");
    watchOrder(item, hold);
    return;
  }
  if (!res.redirect_url) throw new Error("the payment provider gave no page to pay on");
  hold.state = "paying";
  if (win) win.location.href = res.redirect_url;
  else { window.location.assign(res.redirect_url); return; }  // no popup: pay here, "My orders here" shows it on return
  note(poolId, `Complete your payment of ${formatMoney(res.amount, res.currency || item.currency)} on the payment page.`, "wait");
  watchOrder(item, hold);
}

/** Follow a hold until its order is settled (GET /api/orders/{hold}: 404 until then) or it ended. */
async function watchOrder(item, hold) {
  if (hold.watching) return;
  hold.watching = true;
  const poolId = item.pool_id;
  const until = Date.now() + WATCH_MS;
  let delay = 800;
  try {
    while (Date.now() < until && holds.get(poolId) === hold) {
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(3000, delay * 1.3);
      try {
        const order = await api("GET", `/api/orders/${encodeURIComponent(hold.hold)}`);
        hold.state = "settled";
        hold.order = order;
        holds.delete(poolId);
        note(poolId, `Order confirmed ✓ ${shortId(order.order_id)} · ${formatMoney(order.total, order.currency)}`, "ok");
        toast(`Order ${shortId(order.order_id)} confirmed`, "ok");
        loadMyOrders();
        return;
      } catch (err) {
        if (err.status !== 404) continue;  // not settled yet (or a hiccup): ask again
      }
      if (hold.state === "paid") continue;
      try {
        const h = await api("GET", `/api/holds/${encodeURIComponent(hold.hold)}`);
        if (h.status === "confirmed") {
          hold.state = "paid";
          note(poolId, "Paid ✓ — confirming your order…", "ok");
        } else if (h.status === "released" || h.status === "expired" || (h.pay_by && h.pay_by <= Date.now() && h.status !== "confirmed")) {
          holds.delete(poolId);
          note(poolId, "Your reservation ended before it was paid: buy again.", "error");
          return;
        }
      } catch { /* ask again */ }
    }
  } finally {
    hold.watching = false;
  }
}

async function loadMyOrders() {
  if (!identity || !shop) return;
  const mine = [];
  try {
    let cursor = null;
    for (let page = 0; page < 5; page++) {
      const q = `/api/me/orders?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      const r = await api("GET", q);
      mine.push(...(r.orders || []).filter((o) => o.channel === shop.channel));
      cursor = r.next;
      if (!cursor) break;
    }
  } catch {
    return;  // kept as it is
  }
  myOrders = mine.sort((a, b) => (b.settled_at || 0) - (a.settled_at || 0));
  renderOrders();
}

// ---------------------------------------------------------------------------------------------
// rendering

function show(node, visible) {
  if (node && node.hidden === visible) node.hidden = !visible;
}

function renderWho() {
  const who = byId("shop-viewer");
  setText(who, identity ? `Buying as ${identity.name}${identity.guest ? " (guest)" : ""}` : "");
  who.dataset.kind = identity ? (identity.platform ? "member" : "guest") : "anonymous";
}

function thumb(item) {
  const t = el("span", { class: "product-thumb", "aria-hidden": "true" },
    (item.title || "?").trim().split(/\s+/).slice(0, 2).map((w) => w[0]).join("").toUpperCase());
  t.style.setProperty("--h", hue(item.pool_id || item.title));
  return t;
}

const itemEls = new Map();  // pool id -> {li, buy, status}
function renderItems() {
  if (!shop) return;
  const list = byId("shop-items");
  const items = shop.products || [];
  for (const item of items) {
    let row = itemEls.get(item.pool_id);
    if (!row) {
      const buy = el("button", { class: "buy-button", type: "button", "data-testid": `shop-buy-${item.pool_id}`,
        onclick: () => onBuy(item) });
      const status = el("div", { class: "shop-status", "data-testid": `shop-status-${item.pool_id}`, "aria-live": "polite" });
      const li = el("li", { class: "shop-item", "data-testid": `shop-item-${item.pool_id}`, "data-pool-id": item.pool_id },
        thumb(item),
        el("h3", { class: "shop-item-title", "data-testid": "shop-item-title" }, item.title),
        el("span", { class: "shop-item-price", "data-testid": "shop-item-price" }, formatMoney(item.unit_price, item.currency)),
        buy, status);
      row = { li, buy, status };
      itemEls.set(item.pool_id, row);
      list.append(row.li);
    }
    const hold = holds.get(item.pool_id);
    const inFlight = busy.has(item.pool_id);
    const open = item.open !== false;
    row.li.dataset.state = open ? (hold ? hold.state : "idle") : "closed";
    const label = !open ? "Not available" : inFlight ? "One moment…" : hold?.state === "held" || hold?.state === "paying"
      ? `Pay ${formatMoney(item.unit_price, item.currency)}` : `Buy · ${formatMoney(item.unit_price, item.currency)}`;
    setText(row.buy, label);
    row.buy.disabled = !ready || !open || inFlight || hold?.state === "paid";
    row.buy.setAttribute("aria-label", `${label}: ${item.title}`);
    row.buy.dataset.state = open ? "buy" : "none";
    const n = notes.get(item.pool_id);
    setText(row.status, n ? n.text : "");
    if (n) row.status.dataset.kind = n.kind; else delete row.status.dataset.kind;
  }
}

function renderOrders() {
  const titles = new Map((shop?.products || []).map((p) => [p.pool_id, p.title]));
  show(byId("shop-orders"), myOrders.length > 0);
  byId("shop-orders-list").replaceChildren(...myOrders.map((o) => {
    const pool = String(o.sale_id || "").split("--")[0];
    return el("li", { class: "my-row shop-order", "data-testid": `shop-order-${o.order_id}`, "data-status": o.status },
      el("span", { class: "my-info" },
        el("span", { class: "my-title" }, titles.get(pool) || o.sku),
        el("span", { class: "my-meta" },
          el("span", { class: "my-badge", "data-status": o.status }, o.status === "refunded" ? "Refunded" : "Confirmed"),
          el("span", {}, `${o.qty} × ${formatMoney(o.unit_price, o.currency)} · ${new Date(o.settled_at).toLocaleString()}`)),
        el("span", { class: "my-ref" }, `order ${shortId(o.order_id)}`)),
      el("span", { class: "my-right" }, el("span", { class: "my-amount", "data-testid": "shop-order-total" }, formatMoney(o.total, o.currency))));
  }));
}

function renderShop() {
  setText(byId("shop-title"), shop.title);
  setText(byId("shop-topbar-title"), `Mini-shop · ${shop.title}`);
  document.title = `${shop.title} · livesale`;
  const n = (shop.products || []).length;
  setText(byId("shop-sub"), n ? `${n} product${n === 1 ? "" : "s"} picked for you` : "Nothing on sale here right now.");
  renderItems();
}

async function main() {
  const handed = tokenFromFragment();
  if (handed) {
    identity = identityOf(handed, true);
    if (!identity) toast("The sign-in token in the link is not valid or has expired.", "error");
    try { if (identity) sessionStorage.setItem(HANDOFF_KEY, handed); } catch { /* this page view keeps it */ }
  }
  identity = identity || storedIdentity();
  renderWho();
  const limitsRead = serverLimits().then((l) => { limits = l; });
  if (!/^[A-Za-z0-9_-]{1,48}$/.test(shopId)) {
    setText(byId("shop-title"), "No such shop");
    setText(byId("shop-error"), "This link does not name a shop.");
    show(byId("shop-error"), true);
    return;
  }
  try {
    shop = await api("GET", `/api/shops/${encodeURIComponent(shopId)}`);
  } catch (err) {
    setText(byId("shop-title"), err.status === 404 ? "No such shop" : "Mini-shop");
    setText(byId("shop-error"), err.status === 404 ? "This shop does not exist (or was closed)." : `Could not load the shop: ${err.message}`);
    show(byId("shop-error"), true);
    return;
  }
  renderShop();
  await limitsRead;
  ready = true;
  byId("shop-items").dataset.ready = "true";
  renderItems();
  loadMyOrders();
}

main().catch((err) => {
  console.error(err);
  toast(`Could not start: ${err.message || err}`, "error");
});
