// The viewer page (/rooms/<room_id>): player, pinned product, flash sale countdown + buy (with the variant
// and quantity pickers), the show's bag (every product and deal), chat, likes, and the live extras: fan
// teams, polls, coupon drops (a wallet, and a coupon picker when paying) and lucky draws.
import { LiveSaleClient, formatMoney } from "/static/livesale.js";
import { apiWith, byId, el, hue, identityOf, setText, toast, tokenFromFragment } from "/static/ui.js";

const $ = (sel, root = document) => root.querySelector(sel);

const roomId = (() => {
  const m = location.pathname.match(/\/rooms\/([^/?#]+)/);
  if (m) return decodeURIComponent(m[1]);
  return new URLSearchParams(location.search).get("room") || "demo";
})();

// ---------------------------------------------------------------------------------------------
// small DOM helpers

function setAttr(el, name, value) {
  if (!el) return;
  if (value === null || value === undefined || value === false) {
    if (el.hasAttribute(name)) el.removeAttribute(name);
  } else if (el.getAttribute(name) !== String(value)) {
    el.setAttribute(name, String(value));
  }
}
function show(el, visible) {
  if (el && el.hidden === visible) el.hidden = !visible;
}
function fmtClock(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const mm = String(m).padStart(2, "0");
  const ss = String(s).padStart(2, "0");
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}
/** A duration in words: "10 s", "5 min", "1 min 30 s". */
function fmtSpan(ms) {
  const total = Math.max(0, Math.round(ms / 1000));
  if (total < 60) return `${total} s`;
  const m = Math.floor(total / 60);
  const s = total % 60;
  return s ? `${m} min ${s} s` : `${m} min`;
}

// ---------------------------------------------------------------------------------------------
// identity (docs/CLIENT.md, "Signing in: the token handoff"): a viewer token signed by the embedding
// platform, handed over in the URL fragment (#token=<jwt>, removed from the address bar at once) or
// with window.livesale.setToken(jwt), kept in sessionStorage for this tab; else, when the server
// offers guest tokens (GET /api/time `guests`, hello.limits.guests), a guest token per browser in
// localStorage; else the page watches anonymously and says that buying needs signing in.

const ID_KEY = "livesale.viewer";          // the guest identity (localStorage, per browser)
const NAME_KEY = "livesale.name";
const HANDOFF_KEY = "livesale.handoff";    // the platform's token (sessionStorage, this tab)
let guestsOffered = false;                 // the server issues guest tokens

function randomName() {
  const adj = ["Happy", "Swift", "Lucky", "Bright", "Cosmic", "Sunny", "Bold", "Calm", "Witty", "Keen"];
  const noun = ["Otter", "Falcon", "Panda", "Fox", "Koala", "Lynx", "Heron", "Tiger", "Robin", "Whale"];
  const r = (a) => a[Math.floor(Math.random() * a.length)];
  return `${r(adj)} ${r(noun)}`;
}

function loadHandoff() {
  try { return identityOf(sessionStorage.getItem(HANDOFF_KEY), true); } catch { return null; }
}

function saveHandoff(id) {
  try {
    if (id) sessionStorage.setItem(HANDOFF_KEY, id.token); else sessionStorage.removeItem(HANDOFF_KEY);
  } catch { /* storage disabled: this page view keeps it */ }
}

function loadIdentity() {
  try {
    const id = JSON.parse(localStorage.getItem(ID_KEY) || "null");
    if (!id || !id.token) return null;
    const fresh = identityOf(id.token, false);
    return fresh ? { ...fresh, name: id.name || fresh.name } : null;
  } catch {
    return null;
  }
}

async function serverOffersGuests() {
  try {
    const res = await fetch("/api/time");
    return res.ok && (await res.json()).guests === true;
  } catch {
    return false;
  }
}

async function fetchIdentity(name) {
  let delay = 500;
  for (;;) {
    try {
      const res = await fetch("/api/viewer-token", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name }),
      });
      const body = await res.json().catch(() => ({}));
      if (res.ok && body.token) {
        const id = { ...identityOf(body.token, false), user: body.user, name: body.name || name };
        localStorage.setItem(ID_KEY, JSON.stringify({ token: id.token, user: id.user, name: id.name }));
        localStorage.setItem(NAME_KEY, id.name);
        return id;
      }
      if (res.status === 403 && body.error?.code === "GUESTS_OFF") { guestsOffered = false; return null; }
      if (res.status >= 400 && res.status < 500 && res.status !== 429) {
        throw new Error(body.error?.message || `viewer token refused (${res.status})`);
      }
    } catch (err) {
      if (err instanceof TypeError) { /* network error: retry */ } else {
        toast(String(err.message || err), "error");
        if (name !== "Guest") return fetchIdentity("Guest");
        throw err;
      }
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 8000);
  }
}

/** The identity to use when the platform handed none: a guest one if the server offers them. */
async function guestOrAnonymous(name) {
  guestsOffered = await serverOffersGuests();
  if (!guestsOffered) return null;
  return loadIdentity() || await fetchIdentity(name || localStorage.getItem(NAME_KEY) || randomName());
}

function showIdentity() {
  setText(byId("viewer-name"), identity ? identity.name : "Not signed in");
  setAttr(byId("viewer-name"), "data-kind", identity ? (identity.platform ? "member" : "guest") : "anonymous");
  show(byId("rename-button"), !!identity && !identity.platform);
  const input = byId("comment-input");
  if (input) {
    input.disabled = !identity;
    input.placeholder = identity ? "Say something…" : "Sign in to chat";
  }
}

/** Use a token (the platform's handoff, a guest token, or null: anonymous) and re-join with it. */
function useIdentity(id) {
  const other = (identity?.user || null) !== (id?.user || null);
  identity = id;
  showIdentity();
  if (other) { resetMyOrders(); resetSaved(); }  // the new token's saved products load after its join
  if (client) {
    client.setToken(id ? id.token : null);
    restoreHolds();
    if (other) resetExtras();  // client.setToken cleared the previous viewer's votes, claims and wins
  }
  render();
}

/** window.livesale.setToken(jwt): the embedding platform signs the viewer in (or out, with null). */
window.livesale = window.livesale || {};
window.livesale.setToken = function setToken(token) {
  if (!token) {
    saveHandoff(null);
    guestOrAnonymous().then(useIdentity);
    return true;
  }
  const id = identityOf(token, true);
  if (!id) throw new Error("livesale.setToken: not a valid, unexpired viewer token");
  saveHandoff(id);
  useIdentity(id);
  return true;
};
Object.defineProperty(window.livesale, "identity", {  // who the page buys as (null: anonymous)
  get() { return identity ? { user: identity.user, name: identity.name, guest: identity.guest } : null; },
  configurable: true,
});

// ---------------------------------------------------------------------------------------------
// my holds survive a reload (the snapshot has no personal state)

let identity = null;         // {token, user, name, guest, platform} or null (anonymous)
const holdsKey = () => `livesale.holds.${roomId}.${identity?.user || "anon"}`;

function saveHolds() {
  try {
    const arr = Array.from(client.holds.values()).slice(-20);
    localStorage.setItem(holdsKey(), JSON.stringify(arr));
  } catch { /* storage full or disabled */ }
}

async function restoreHolds() {
  if (!identity) return;
  let arr = [];
  try { arr = JSON.parse(localStorage.getItem(holdsKey()) || "[]"); } catch { arr = []; }
  for (const h of arr) if (h && h.hold) client.holds.set(h.hold, h);
  // Ask the server what became of holds that were still open.
  await Promise.all(arr.filter((h) => h && h.status === "held").map(async (h) => {
    try {
      const res = await fetch(`/api/holds/${encodeURIComponent(h.hold)}`, {
        headers: { Authorization: `Bearer ${identity.token}` },
      });
      if (res.status === 404 || res.status === 403) { client.holds.delete(h.hold); return; }
      if (!res.ok) return;
      const body = await res.json();
      const status = body.status || body.hold?.status;
      const payBy = body.pay_by ?? body.pay_by_ms ?? body.hold?.pay_by;
      const cur = client.holds.get(h.hold);
      if (cur && status) client.holds.set(h.hold, { ...cur, status, ...(payBy ? { pay_by: payBy } : {}) });
    } catch { /* keep the local view */ }
  }));
  saveHolds();
  scheduleRender();
}

// ---------------------------------------------------------------------------------------------
// the client

let client = null;
const notes = new Map();     // sale_id -> {code, at}: the last non-RESERVED answer to my buy
const buying = new Set();    // sale ids with a buy in flight (or waiting for the open instant)
const paying = new Set();    // hold ids being paid
let unsentLikes = 0;         // my likes not sent yet (batched every 400 ms)
let sentLikes = 0;           // sent, not yet seen in a tick's total
let connectingSince = Date.now();
let joinedOnce = false;      // the page had the room at least once (a later loss is "offline")
// A room that does not exist yet (the viewer came early): join again every 5 s, then less often.
let roomWait = null;         // {attempt, timer, next} while waiting for the room to be created

// The featured card (docs/CLIENT.md, "The show's bag"): the sale the product card shows is kept
// while it is open or scheduled, or while I hold (or am buying, or paying) a unit of it; a new deal
// does not replace it but raises a notice. Only once it is sold out or ended (and none of that holds)
// does the card move on by itself, FINISHED_GRACE_MS later, and Buy then ignores taps for
// SWAP_GUARD_MS so that a tap aimed at the old card never lands on the new one.
const FINISHED_GRACE_MS = 4000;
const SWAP_GUARD_MS = 700;
const RECENT_MS = 10 * 60000;  // ended sales stay on the card / in the bag this long
let featuredId = null;         // sale id the card shows (null: the pinned product, or nothing)
let featuredFinishedAt = 0;    // Date.now() when the featured sale was first seen sold out / ended
let swapGuardUntil = 0;        // performance.now() until which Buy ignores taps (after an automatic move)
let swapGuardTimer = null;
const newDeals = [];           // [{id, at}]: sales announced after the first snapshot, oldest first
const dismissedDeals = new Set();
let knownSaleIds = null;       // sale ids of the last snapshot (null before the first one)
let bagOpen = false;
const bagRows = new Map();     // "s:<sale_id>" | "g:<group>" | "p:<product_id>" -> {li, button, parts...}
let bagOrder = "";

// Variants and quantity (docs/CLIENT.md, "Variants and quantity"). A sale of several variants is one
// Sale per variant sharing `group`: the card shows one of them (featuredId) and a picker of all; a pick
// by the viewer is the only thing that switches between them. `qty` is what Buy reserves, 1..qtyMax of
// the card's sale, back to 1 whenever the card shows another sale.
const QTY_CAP = 10;
let qty = 1;
let qtySale = null;            // the sale id qty was chosen for
let variantKey = "";
const variantEls = new Map();  // sale_id -> {button, label, units}

async function main() {
  const handed = tokenFromFragment();
  if (handed) {
    identity = identityOf(handed, true);
    if (!identity) toast("The sign-in token in the link is not valid or has expired.", "error");
    saveHandoff(identity);
  } else {
    identity = loadHandoff();
  }
  if (!identity) {
    const guest = await guestOrAnonymous();
    identity = identity || guest;  // window.livesale.setToken() may have signed in meanwhile
  }
  showIdentity();

  client = new LiveSaleClient({ room: roomId, token: identity ? identity.token : null, joinFields });
  client.addEventListener("change", scheduleRender);
  client.addEventListener("state", onState);
  client.addEventListener("error", onClientError);
  client.addEventListener("buy_result", saveHolds);
  client.addEventListener("pay_result", saveHolds);
  client.addEventListener("release_result", saveHolds);
  client.addEventListener("order_confirmed", (e) => {
    saveHolds();
    const o = e.detail.order;
    // an order recovered by the catch-up may have been refunded meanwhile (status: refunded)
    toast(`Order ${shortId(o?.order_id)} ${o?.status === "refunded" ? "was refunded" : "confirmed"}`, "ok");
  });
  client.addEventListener("tick", onTick);
  client.addEventListener("snapshot", onSnapshotSales);
  client.addEventListener("sale_scheduled", onNewDeal);
  client.addEventListener("sale_open", onNewDeal);
  client.addEventListener("payment_refunded", () => {
    toast("Your payment arrived after your reservation had ended: it was refunded.", "error");
  });
  client.addEventListener("order_refunded", (e) => {
    const r = e.detail;
    toast(`Order ${shortId(r.order_id)} was refunded${r.amount ? `: ${formatMoney(r.amount, r.currency || "EUR")} back` : ""}`, "ok");
  });
  // "My orders", while open, reads the server's list again after each of my buys, payments, releases,
  // orders and refunds (coalesced).
  for (const type of ["buy_result", "pay_result", "release_result", "payment_started", "payment_refunded",
    "order_confirmed", "order_refunded", "hold_expired"]) {
    client.addEventListener(type, () => refreshMyOrdersSoon());
  }
  client.addEventListener("joined", () => { joinedOnce = true; roomWait = null; loadSaved(); afterJoinExtras(); render(); });
  client.addEventListener("joined", showSharedProduct);
  client.addEventListener("joined", () => loadReminders());  // my waiting reminders, read at each join
  client.addEventListener("notice", (e) => showNotice(e.detail?.notice));  // ?product=<id>: that product's deal on the card
  loadExtras();
  client.addEventListener("entry_result", saveExtras);
  client.addEventListener("team_joined", saveExtras);
  client.addEventListener("draw_won", (e) => {
    const w = e.detail;
    saveExtras();
    saveHolds();
    const draw = client.draws.get(w.draw_id);
    toast(`You won ${draw ? `“${draw.title}”` : "the lucky draw"}!${prizeHold(w) ? " Claim your prize on the draw's card." : " The coupon is in your wallet."}`, "ok");
    if (w.coupon) refreshCouponsSoon(300);
  });
  // the wallet changes with my payments (a coupon is redeemed, or goes back when a payment fails)
  client.addEventListener("order_confirmed", () => refreshCouponsSoon(300));
  client.addEventListener("pay_result", (e) => { if (e.detail.coupon || e.detail.code?.startsWith("COUPON_")) refreshCouponsSoon(100); });
  client.addEventListener("hold_expired", (e) => {
    // pay_by passed before a payment: the reservation is gone, say so (also while offline)
    const h = e.detail;
    notes.set(h.sale, { code: "EXPIRED", at: Date.now() });
    paying.delete(h.hold);
    saveHolds();
    toast("Your reservation expired: it was not paid in time.", "error");
    render();
  });
  window.addEventListener("offline", render);
  window.addEventListener("online", () => {
    if (roomWait) retryRoomNow();
    render();
  });
  await restoreHolds();
  client.start().catch(() => {});
  setInterval(render, 250);
  setInterval(flushLikes, 400);
  wireUi();
  wireGrowth();
  wireReminders();
  watchCardHeight();
  render();
}

function shortId(id) {
  if (!id) return "";
  const tail = String(id).split(".").pop();
  return "#" + tail.slice(0, 8).toUpperCase();
}

function onState(e) {
  if (e.detail.state === "connecting" || e.detail.state === "reconnecting") {
    if (!connectingSince) connectingSince = Date.now();
  } else {
    connectingSince = 0;
  }
  if (e.detail.state === "closed" && client.fatal?.code === "NOT_FOUND") waitForRoom();
  render();
}

/** The room is not there (yet): the host creates it with POST /api/rooms. Join again in 5 s, then
 *  with a growing delay (x1.5, at most 30 s, with jitter) until it exists. */
function waitForRoom() {
  const attempt = roomWait ? roomWait.attempt + 1 : 0;
  const base = Math.min(30000, 5000 * 1.5 ** attempt);
  const delay = Math.round(base * (0.8 + Math.random() * 0.2));
  clearTimeout(roomWait?.timer);
  roomWait = { attempt, next: Date.now() + delay, timer: setTimeout(retryRoomNow, delay) };
}

function retryRoomNow() {
  if (!roomWait) return;
  clearTimeout(roomWait.timer);
  roomWait.timer = null;
  if (client.state === "closed") client.start().catch(() => { /* shown by the state handler */ });
}

/** Connection lost after the room was shown: Buy and Pay are held back until the client resumed. */
function isOffline() {
  return !!client && joinedOnce && client.state !== "open";
}

async function onClientError(e) {
  const { code, message, request } = e.detail;
  if (code === "UNAUTHORIZED" && identity) {
    // Token expired or signed with an old secret: the platform's is dropped (sign in again on the
    // platform); a guest one is replaced when the server still offers guests; else watch anonymously.
    if (identity.platform) {
      saveHandoff(null);
      toast("Your sign-in has expired: sign in again to buy.", "error");
    } else {
      localStorage.removeItem(ID_KEY);
    }
    useIdentity(await guestOrAnonymous(identity.platform ? null : identity.name));
    return;
  }
  if (request === "join" && code === "NOT_FOUND") { render(); return; } // banner + waitForRoom
  if (request === "join_team") return;  // shown on the team picker (onTeamTap)
  const text = {
    MUTED: "You have been muted in this room.",
    RATE_LIMITED: request === "comment" ? "Slow down: one comment per second." : "Too fast: try again in a moment.",
  }[code] || message || code;
  toast(text, "error");
}

let lastLikes = null;
function onTick(e) {
  const t = e.detail;
  if (typeof t.likes === "number") {
    const delta = lastLikes === null ? 0 : Math.max(0, t.likes - lastLikes);
    const mine = Math.min(sentLikes, delta);
    sentLikes -= mine;
    for (let i = 0; i < Math.min(3, delta - mine); i++) setTimeout(floatHeart, i * 120);
    lastLikes = t.likes;
  }
}

/** A deal announced live (sale_scheduled, sale_open; also a restock or a scheduled one opening):
 *  a candidate for the "New deal" notice unless it is the one on the card. */
function onNewDeal(e) {
  const id = e.detail.sale?.sale_id;
  if (!id) return;
  knownSaleIds?.add(id);
  noteNewDeal(id);
}

/** A snapshot (after a join, or unasked after the gateway lost the stream) replaces every sale:
 *  the ones that were not known before are new deals as well. The first snapshot is the baseline. */
function onSnapshotSales(e) {
  const ids = (e.detail.sales || []).map((s) => s.sale_id);
  if (knownSaleIds) for (const id of ids) if (!knownSaleIds.has(id)) noteNewDeal(id);
  knownSaleIds = new Set(ids);
}

function noteNewDeal(id) {
  if (id === featuredId) return;
  dismissedDeals.delete(id);
  const i = newDeals.findIndex((d) => d.id === id);
  if (i >= 0) newDeals.splice(i, 1);
  newDeals.push({ id, at: Date.now() });
  if (newDeals.length > 50) newDeals.shift();
}

// ---------------------------------------------------------------------------------------------
// UI wiring

function wireUi() {
  byId("buy-button").addEventListener("click", onBuy);
  byId("qty-minus").addEventListener("click", () => setQty(qty - 1));
  byId("qty-plus").addEventListener("click", () => setQty(qty + 1));
  byId("variant-picker").addEventListener("click", onVariantClick);
  byId("pay-button").addEventListener("click", onPay);
  byId("release-button").addEventListener("click", onRelease);
  byId("new-deal-notice").addEventListener("click", () => {
    const id = byId("new-deal-notice").dataset.saleId;
    if (id) viewSale(id);
  });
  byId("new-deal-dismiss").addEventListener("click", () => {
    const id = byId("new-deal-notice").dataset.saleId;
    if (id) dismissedDeals.add(id);
    if (id) for (const s of client.variantsOf(id)) dismissedDeals.add(s.sale_id);  // a sale of variants: all of it
    render();
  });
  byId("extras").addEventListener("click", onExtrasClick);
  byId("coupon-select").addEventListener("change", (ev) => {
    const hold = ev.target.dataset.hold;
    if (hold) couponChoice.set(hold, ev.target.value);
    render();
  });
  byId("bag-button").addEventListener("click", () => setBagOpen(!bagOpen));
  byId("bag-close").addEventListener("click", () => setBagOpen(false));
  byId("bag-backdrop").addEventListener("click", () => setBagOpen(false));
  byId("bag-list").addEventListener("click", onBagClick);
  $(".card-save").addEventListener("click", (ev) => onSaveTap(ev.currentTarget.dataset.productId));
  byId("my-orders-button").addEventListener("click", () => setOrdersOpen(!ordersOpen));
  byId("my-orders-close").addEventListener("click", () => setOrdersOpen(false));
  byId("my-orders-backdrop").addEventListener("click", () => setOrdersOpen(false));
  byId("my-orders-sheet").addEventListener("click", onMyOrdersClick);
  document.addEventListener("keydown", (ev) => {
    if (ev.key !== "Escape") return;
    if (bagOpen) setBagOpen(false);
    if (ordersOpen) setOrdersOpen(false);
  });
  byId("like-button").addEventListener("click", () => {
    unsentLikes += 1;
    floatHeart();
    render();
  });
  byId("comment-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = byId("comment-input");
    const text = input.value.trim();
    if (!text) return;
    client.comment(text);
    input.value = "";
    chatStick = true; // your own comment: follow the chat again
  });
  byId("rename-button").addEventListener("click", async () => {
    const name = (prompt("Your display name", identity?.name || "") || "").trim().slice(0, 40);
    if (!name || name === identity?.name || identity?.platform) return;
    localStorage.removeItem(ID_KEY);
    const id = guestsOffered ? await fetchIdentity(name) : null;
    if (id) useIdentity(id);
  });
}

/** On a phone the product card is fixed to the bottom of the screen: the layout above it (player,
 *  chat) is sized to what the card leaves (--card-h, see style.css). */
function watchCardHeight() {
  const card = byId("product-card");
  const update = () => {
    const h = Math.ceil(card.getBoundingClientRect().height);
    document.documentElement.style.setProperty("--card-h", `${h}px`);
  };
  update();
  if (typeof ResizeObserver === "function") new ResizeObserver(update).observe(card);
  else window.addEventListener("resize", update);
}

function flushLikes() {
  if (unsentLikes > 0 && client && client.joined) {
    const batch = Math.min(50, unsentLikes);
    client.like(batch);
    unsentLikes -= batch;
    sentLikes += batch;
  }
}

function floatHeart() {
  const box = $(".hearts");
  if (!box || box.childElementCount > 12) return;
  const h = document.createElement("span");
  h.className = "heart";
  h.textContent = "♥";
  h.style.setProperty("--dx", `${Math.round((Math.random() - 0.5) * 60)}px`);
  h.style.setProperty("--hue", `${330 + Math.round(Math.random() * 40)}`);
  box.appendChild(h);
  h.addEventListener("animationend", () => h.remove());
}

async function onBuy() {
  // The sale whose card was rendered under the button (data-sale-id, set by renderBuy), never "the
  // latest sale": a tap buys what the viewer was looking at.
  const saleId = byId("buy-button").dataset.saleId;
  const sale = saleId ? client.sales.get(saleId) : null;
  if (performance.now() < swapGuardUntil) return; // the card has just moved: this tap was aimed at the old one
  if (isOffline()) { toast(OFFLINE_TAP, "error"); return; }
  if (!identity) { toast(SIGNIN_TEXT, "error"); return; }
  if (!sale || buying.has(sale.sale_id)) return;
  const n = qtyOf(sale);  // the quantity shown next to the button when it was tapped
  buying.add(sale.sale_id);
  notes.delete(sale.sale_id);
  render();
  try {
    await buyWithRetry(sale.sale_id, n);
  } finally {
    buying.delete(sale.sale_id);
    render();
  }
}

async function buyWithRetry(saleId, n = 1) {
  // A tap a few ms before the server's open instant gets NOT_STARTED: retry right after it.
  for (let attempt = 0; attempt < 4; attempt++) {
    let res;
    try {
      res = await client.buy(saleId, n);
    } catch (err) {
      toast(err.code === "TIMEOUT" ? "No answer from the server, try again." : `Could not buy: ${err.message}`, "error");
      return;
    }
    if (res.code === "NOT_STARTED") {
      const s = client.sales.get(saleId);
      const wait = (s?.starts_at ?? 0) - client.serverNow();
      if (wait < 5000) {
        await new Promise((r) => setTimeout(r, Math.max(30, wait + 30 + attempt * 100)));
        continue;
      }
    }
    handleBuyResult(saleId, res, n);
    return;
  }
  notes.set(saleId, { code: "NOT_STARTED", at: Date.now(), qty: n });
}

function handleBuyResult(saleId, res, n = 1) {
  switch (res.code) {
    case "RESERVED":
      notes.delete(saleId);
      break;
    case "RATE_LIMITED":
      toast("Too fast: try again in a moment.", "error");
      break;
    case "UNAUTHORIZED":
      onClientError({ detail: { code: "UNAUTHORIZED" } });
      break;
    case "INVALID":
    case "IDEM_MISMATCH":
      toast(`Could not buy (${res.code})`, "error");
      break;
    default:
      // LIMIT and SOLD_OUT are answers for this quantity: a smaller one may still go through
      notes.set(saleId, { code: res.code, at: Date.now(), qty: n });
  }
}

const SIGNIN_TEXT = "Buying needs signing in: open this live from the shop's site, signed in.";
const MEMBERS_TEXT = "This sale is for signed-in members: sign in on the shop's site to buy.";
const OFFLINE_TAP = "You are offline — reconnecting. Nothing was sent: tap again once you are back online.";

async function onPay() {
  return payHold(heldHold(byId("pay-button").dataset.hold));  // the reservation shown on the card
}

/** Pay one of my holds ({hold, sale, qty}): the card's Pay and the Pay of a reservation in "My orders". */
async function payHold(hold) {
  // The Pay button stays tappable while offline (aria-disabled) so that a tap gets an answer.
  if (isOffline()) {
    toast(hold && paying.has(hold.hold) ? "You are offline — your payment goes out as soon as the connection is back."
      : OFFLINE_TAP, "error");
    return;
  }
  if (!hold || paying.has(hold.hold)) return;
  // with a provider: checkout (a prize at price 0 is confirmed at once, without the provider's page)
  if (client.paymentMode !== "instant") return payWithProvider(hold, !!hold.prize);
  const coupon = chosenCoupon(hold)?.coupon.drop_id;  // a coupon of the wallet (the card's picker)
  paying.add(hold.hold);
  render();
  try {
    const res = await client.pay(hold.hold, { coupon });
    if (res.code === "EXPIRED") notes.set(hold.sale, { code: "EXPIRED", at: Date.now() }); // + hold_expired's toast
    else if (COUPON_REFUSAL[res.code]) { toast(COUPON_REFUSAL[res.code], "error"); refreshCouponsSoon(0); }
    else if (res.code !== "CONFIRMED" && res.code !== "ALREADY_CONFIRMED") toast(`Payment failed (${res.code})`, "error");
    else if (res.discount) toast(`Paid ${formatMoney(res.total, client.sales.get(hold.sale)?.currency || "EUR")} with your coupon (−${formatMoney(res.discount, client.sales.get(hold.sale)?.currency || "EUR")})`, "ok");
  } catch (err) {
    toast(`Payment failed: ${err.message}`, "error");
  } finally {
    paying.delete(hold.hold);
    saveHolds();
    render();
  }
}

// With a payment provider (hello.limits.payments is not "instant"): `checkout`, then the provider's
// hosted pay page in a new window (opened during the tap, so popup blockers let it through). The
// hold becomes paid when the provider's webhook reaches the server: order_confirmed. Tapping Pay
// again opens the same payment (the server returns it again while it is not paid or canceled).
async function payWithProvider(hold, free = false) {
  const coupon = chosenCoupon(hold)?.coupon.drop_id;  // a coupon of the wallet: the provider asks for the total
  const win = free ? null : window.open("", "_blank");
  paying.add(hold.hold);
  render();
  try {
    const res = await client.checkout(hold.hold, { coupon });
    if (!res.redirect_url && res.amount === 0) {  // nothing to pay (a prize, a 100% coupon): confirmed at once
      if (win) win.close();
      toast(hold.prize ? "Prize claimed: it is yours." : "Paid in full with your coupon: confirmed.", "ok");
      return;
    }
    if (!res.redirect_url) throw new Error("the payment provider gave no page to pay on");
    if (win) win.location.href = res.redirect_url;
    else window.location.assign(res.redirect_url);  // no popup: pay here, the order catch-up finds it on return
    toast("Complete your payment on the payment page.", "ok");
  } catch (err) {
    if (win) win.close();
    if (err.code === "EXPIRED") notes.set(hold.sale, { code: "EXPIRED", at: Date.now() });
    else if (COUPON_REFUSAL[err.code]) { toast(COUPON_REFUSAL[err.code], "error"); refreshCouponsSoon(0); }
    else if (err.code !== "ALREADY_CONFIRMED") toast(`Payment failed: ${err.message}`, "error");
  } finally {
    paying.delete(hold.hold);
    saveHolds();
    render();
  }
}

async function onRelease() {
  return releaseHold(heldHold(byId("release-button").dataset.hold));
}

/** Give one of my holds back: the card's "Cancel reservation" and the Cancel of a reservation in "My orders". */
async function releaseHold(hold) {
  if (!hold) return;
  if (isOffline()) { toast(OFFLINE_TAP, "error"); return; }
  try { await client.release(hold.hold); } catch (err) { toast(err.message, "error"); }
  saveHolds();
  render();
}

// ---------------------------------------------------------------------------------------------
// derived state

function activeHold(saleId) {
  if (!client || !saleId) return null;
  const now = client.serverNow();
  for (const h of client.holdsOf(saleId)) {
    if (h.status === "held" && (!h.pay_by || h.pay_by > now)) return h;
  }
  return null;
}

/** One of my holds by id while it is still held (the one a Pay / Cancel button was rendered for). */
function heldHold(holdId) {
  const h = holdId ? client?.holds.get(holdId) : null;
  if (!h || h.status !== "held" || (h.pay_by && h.pay_by <= client.serverNow())) return null;
  return h;
}

function confirmedQty(saleId) {
  let q = 0;
  for (const h of client.holdsOf(saleId)) if (h.status === "confirmed") q += h.qty || 1;
  return q;
}

/** The sale the card would show with nothing featured yet: mine (an unpaid hold) > open > next
 *  scheduled > the pinned product's latest recent sale (null: the pinned product itself) > latest;
 *  a sale of variants on its preferred variant. */
function autoSale() {
  const sale = autoSaleOf();
  return sale?.group ? preferredVariant(sale) : sale;
}

/** The variant of a sale of variants to show first: the one I hold, else the first open one (in the
 *  product's variant order), else the first scheduled one, else the sale given. */
function preferredVariant(sale) {
  if (!sale?.group) return sale;
  const now = client.serverNow();
  const vs = client.variantsOf(sale);
  return vs.find((s) => activeHold(s.sale_id)) || vs.find((s) => client.salePhase(s, now) === "open")
    || vs.find((s) => client.salePhase(s, now) === "scheduled") || sale;
}

function autoSaleOf() {  // autoSale before the choice of a variant
  if (!client) return null;
  const sales = client.salesList();
  if (!sales.length) return null;
  const now = client.serverNow();
  const phase = (s) => client.salePhase(s, now);
  const mine = sales.filter((s) => activeHold(s.sale_id));
  if (mine.length) return mine[mine.length - 1];
  const open = sales.filter((s) => phase(s) === "open");
  if (open.length) return open[open.length - 1];
  const scheduled = sales.filter((s) => phase(s) === "scheduled");
  if (scheduled.length) return scheduled[0];
  const recent = sales.filter((s) => (s.ends_at ?? 0) > now - RECENT_MS || confirmedQty(s.sale_id) > 0);
  const pinnedId = client.pinned?.product_id;
  if (pinnedId) {
    const forPinned = recent.filter((s) => s.product_id === pinnedId);
    if (forPinned.length) return forPinned[forPinned.length - 1];
    return null; // show the pinned product itself
  }
  return recent.length ? recent[recent.length - 1] : null;
}

/** Whether the featured sale keeps the card: it is open or scheduled, or I hold, buy or pay a unit
 *  of it, or it finished less than FINISHED_GRACE_MS ago (the viewer sees how it ended). */
function keepsCard(sale) {
  const id = sale.sale_id;
  if (activeHold(id) || buying.has(id)) return true;
  if (client.holdsOf(id).some((h) => paying.has(h.hold))) return true;
  const phase = client.salePhase(sale);
  if (phase === "open" || phase === "scheduled") return true;
  // One variant of a sale of variants sold out or ended: the card stays on the sale (its picker offers
  // the other variants) while another variant is on or held; it never switches variant by itself.
  if (sale.group && client.variantsOf(sale).some((s) => s.sale_id !== id && (activeHold(s.sale_id)
    || buying.has(s.sale_id) || ["open", "scheduled"].includes(client.salePhase(s))))) return true;
  if (!featuredFinishedAt) featuredFinishedAt = Date.now();
  return Date.now() - featuredFinishedAt < FINISHED_GRACE_MS;
}

/** The sale the card shows now (called by render, once per frame). Sticky: see keepsCard. */
function featureSale() {
  if (!client) return null;
  const cur = featuredId ? client.sales.get(featuredId) : null;
  if (cur && keepsCard(cur)) return cur;
  const next = autoSale();
  const id = next ? next.sale_id : null;
  if (id !== featuredId) {
    // An automatic move from one sale to another: animate it, and let Buy ignore taps for a moment.
    if (featuredId && id) cardMoved(true);
    featuredId = id;
    featuredFinishedAt = 0;
  }
  return next;
}

/** The viewer asked for this sale (the "New deal" notice, a row of the bag): it becomes the card. A
 *  sale of variants is put on the card with the variant already shown, else its preferred one. */
function viewSale(id) {
  let sale = client?.sales.get(id);
  if (!sale) return;
  noteView(sale.product_id);  // the viewer opened this product's deal: an interest signal
  const ids = sale.group ? client.variantsOf(sale).map((s) => s.sale_id) : [id];
  if (sale.group) {
    const cur = featuredId ? client.sales.get(featuredId) : null;
    sale = cur?.group === sale.group ? cur : preferredVariant(sale);
    id = sale.sale_id;
  }
  if (id !== featuredId) {
    featuredId = id;
    featuredFinishedAt = 0;
    cardMoved(false);
  }
  for (const x of ids) dismissedDeals.add(x);
  render();
}

/** The viewer picked a variant of the sale on the card: its sale becomes the card's (what Buy buys). */
function pickVariant(id) {
  const sale = client?.sales.get(id);
  const cur = featuredId ? client.sales.get(featuredId) : null;
  if (!sale || id === featuredId || !sale.group || cur?.group !== sale.group) return;
  featuredId = id;
  featuredFinishedAt = 0;
  render();
}

function onVariantClick(ev) {
  const b = ev.target.closest(".variant-option");
  if (!b || b.disabled) return;
  pickVariant(b.dataset.saleId);
}

/** The largest quantity Buy may ask for on this sale: min(per-user limit, units left, 10), at least 1. */
function qtyMax(sale) {
  if (!sale) return 1;
  const left = typeof sale.units_left === "number" ? sale.units_left : sale.allocated;
  const lim = sale.per_user_limit || 1;
  return Math.max(1, Math.min(lim, typeof left === "number" ? left : lim, QTY_CAP));
}

/** The quantity Buy reserves on this sale (1 unless it is the card's sale). */
function qtyOf(sale) {
  return sale && sale.sale_id === qtySale ? qty : 1;
}

function setQty(n) {
  const sale = qtySale ? client?.sales.get(qtySale) : null;
  if (!sale) return;
  qty = Math.max(1, Math.min(qtyMax(sale), Math.floor(n) || 1));
  render();
}

/** My units of a sale, across all its variants for a sale of variants (what its per-user limit counts):
 *  {held, bought} from this page's holds (unpaid and not expired; paid). */
function myUnits(sale) {
  const now = client.serverNow();
  let held = 0;
  let bought = 0;
  for (const s of client.variantsOf(sale)) {
    for (const h of client.holdsOf(s.sale_id)) {
      if (h.status === "held" && (!h.pay_by || h.pay_by > now)) held += h.qty || 1;
      else if (h.status === "confirmed") bought += h.qty || 1;
    }
  }
  return { held, bought, total: held + bought };
}

/** What the per-user limit means for me, for the status line. */
function limitText(sale, reached) {
  const lim = sale?.per_user_limit || 1;
  const across = sale?.group ? " across this sale" : "";
  const mine = sale ? myUnits(sale).total : 0;
  if (reached) {
    const detail = mine ? ` (you have ${mine}${mine < lim ? `; ${lim - mine} more at most` : ""})` : "";
    return `Limit reached: ${lim} per person${across}${detail}.`;
  }
  return `Limit ${lim} per person${across}${mine && mine < lim ? `: ${lim - mine} more for you` : ""}.`;
}

function cardMoved(automatic) {
  const card = byId("product-card");
  card.classList.remove("card-swap");
  void card.offsetWidth; // restart the animation
  card.classList.add("card-swap");
  if (!automatic) return;
  swapGuardUntil = performance.now() + SWAP_GUARD_MS;
  clearTimeout(swapGuardTimer);
  swapGuardTimer = setTimeout(render, SWAP_GUARD_MS + 10);
}

/** The newest deal announced since the page loaded that is still open or scheduled, not on the
 *  card and not dismissed: what the "New deal" notice offers. */
function noticeSale(featured) {
  const now = client.serverNow();
  for (let i = newDeals.length - 1; i >= 0; i--) {
    const { id } = newDeals[i];
    if (id === featured?.sale_id || dismissedDeals.has(id)) continue;
    const s = client.sales.get(id);
    if (s?.group && s.group === featured?.group) continue;  // another variant of the card's sale
    const phase = s ? client.salePhase(s, now) : null;
    if (phase === "open" || phase === "scheduled") return s;
  }
  return null;
}

function productOf(sale) {
  if (!client) return null;
  if (sale) {
    const p = client.products.find((x) => x.product_id === sale.product_id)
      || (client.pinned && client.pinned.product_id === sale.product_id ? client.pinned : null);
    return { ...(p || {}), title: p?.title || sale.title, currency: sale.currency || p?.currency };
  }
  return client.pinned;
}

/** The buy button's state for a sale: see docs/CLIENT.md (viewer page). */
function buyState(sale) {
  if (!sale) return { state: "none" };
  const now = client.serverNow();
  const phase = client.salePhase(sale, now);
  const held = activeHold(sale.sale_id);
  const bought = confirmedQty(sale.sale_id);
  const note = notes.get(sale.sale_id);
  if (held) return { state: "reserved", hold: held };
  if (buying.has(sale.sale_id)) return { state: "pending" };
  // The per-user limit counts my units of every variant of a sale of variants.
  const groupBought = sale.group ? myUnits(sale).bought : bought;
  const lim = sale.per_user_limit || 1;
  if (bought > 0 && (groupBought >= lim || phase !== "open")) return { state: "confirmed", bought };
  // LIMIT / SOLD_OUT answered a quantity: a smaller one may still go through (the picker offers it)
  if (note?.code === "LIMIT" && qtyOf(sale) >= (note.qty || 1)) return { state: "limit", bought };
  if (groupBought >= lim && phase === "open") return { state: "limit", bought };
  // The host ended the live: the server closes its sales (sale_closed, reason live_ended); an ended
  // room never offers Buy, whatever the sale's own clock says.
  const liveEnded = sale.closed_reason === "live_ended" || client.room?.status === "ended";
  if (phase === "closed" || liveEnded) return { state: "ended", bought, liveEnded };
  if (phase === "sold_out" || (note?.code === "SOLD_OUT" && qtyOf(sale) >= (note.qty || 1))) return { state: "sold-out", bought };
  if (note?.code === "ENDED") return { state: "ended", bought };
  // Buying needs a viewer token; a members-only sale needs one from the platform, not a guest one.
  if (!identity && (phase === "open" || phase === "scheduled")) return { state: "signin", phase };
  if ((sale.members_only && identity?.guest) || note?.code === "MEMBERS_ONLY") return { state: "members-only", phase };
  if (phase === "scheduled") return { state: "not-started" };
  return { state: "buy", bought, note };
}

// ---------------------------------------------------------------------------------------------
// rendering

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; render(); });
}

let playerUrlShown = null;

// The 250 ms interval drives the countdown text; a phase change (a sale opening or closing, a
// pay-by deadline) is rendered at its exact instant by a timer aimed at the next boundary.
let boundaryTimer = null;
let boundaryAt = 0;
function scheduleBoundary() {
  if (!client) return;
  const now = client.serverNow();
  let next = Infinity;
  for (const s of client.sales.values()) {
    for (const t of [s.starts_at, s.ends_at]) if (t > now && t < next) next = t;
  }
  for (const h of client.holds.values()) if (h.status === "held" && h.pay_by > now && h.pay_by < next) next = h.pay_by;
  // the extras' phases: a poll's end, a drop's open and close, a draw's entry deadline
  for (const t of [...Array.from(client.polls.values(), (p) => p.ends_at),
    ...Array.from(client.drops.values(), (d) => (d.starts_at > now ? d.starts_at : d.claim_until)),
    ...Array.from(client.draws.values(), (w) => w.entry_until)]) if (t > now && t < next) next = t;
  if (next === Infinity || next - now > 60000 || next === boundaryAt) return;
  clearTimeout(boundaryTimer);
  boundaryAt = next;
  boundaryTimer = setTimeout(() => { boundaryAt = 0; render(); }, Math.max(0, next - client.serverNow()) + 1);
}

function render() {
  renderConnection();
  if (!client) return;
  scheduleBoundary();
  const room = client.room;
  const title = room?.title || roomId;
  setText(byId("room-title"), title);
  if (document.title !== `${title} · livesale`) document.title = `${title} · livesale`;
  setText(byId("placeholder-title"), title);
  const badge = byId("live-badge");
  const status = room?.status || "scheduled";
  setAttr(badge, "data-status", status);
  setText(badge, status === "live" ? "LIVE" : status === "ended" ? "Ended" : "Starting soon");
  renderPlayer(room?.player_url || "");

  setText(byId("viewer-count"), compact(client.viewers));
  setText(byId("like-count"), compact(client.likes + unsentLikes + sentLikes));

  const sale = featureSale();
  renderProduct(sale);
  renderNotice(sale);
  renderBag(sale);
  renderGrowth();
  renderReminders();
  renderMyOrders();
  renderComments();
  renderTicker();
  renderExtras();

  const ann = byId("announcement");
  const last = client.announcements.at(-1);
  const showAnn = !!last && (!last.ts || client.serverNow() - last.ts < 120000);
  show(ann, showAnn);
  if (showAnn) setText(byId("announcement-text"), last.text);
}

function compact(n) {
  n = Number(n) || 0;
  if (n < 10000) return String(n);
  return new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 }).format(n);
}

function renderConnection() {
  let state = client ? client.state : "connecting";
  const waiting = !!roomWait && state !== "open";
  if (waiting) state = "waiting";
  document.body.dataset.conn = state;
  const conn = byId("conn-state");
  setAttr(conn, "data-state", state);
  setAttr(conn, "title", `Connection: ${state}`);
  const banner = byId("banner");
  const offline = navigator.onLine === false || client?.online === false;
  let text = null;
  if (waiting) text = "This room has not started yet — waiting for the host…";
  else if (state === "reconnecting" || (offline && state !== "open" && state !== "closed")) {
    text = offline ? "You are offline — reconnecting…" : "Connection lost — reconnecting…";
  } else if (state === "connecting" && connectingSince && Date.now() - connectingSince > 1500) text = "Connecting…";
  else if (state === "closed" && client?.fatal) text = `Disconnected: ${client.fatal.message || client.fatal.code}`;
  show(banner, !!text);
  setAttr(banner, "data-kind", state === "closed" ? "error" : "warn");
  if (text) setText(byId("banner-text"), text);
}

function renderPlayer(url) {
  if (url === playerUrlShown) return;
  playerUrlShown = url;
  const media = byId("player-media");
  media.replaceChildren();
  const player = byId("player");
  player.classList.toggle("has-media", !!url);
  if (!url) return;
  let el;
  if (/\.(mp4|webm|ogg|m3u8)(\?|#|$)/i.test(url)) {
    el = document.createElement("video");
    Object.assign(el, { src: url, autoplay: true, muted: true, controls: true, playsInline: true, loop: true });
  } else {
    el = document.createElement("iframe");
    el.src = url;
    el.allow = "autoplay; encrypted-media; picture-in-picture; fullscreen";
    el.setAttribute("allowfullscreen", "");
    el.title = "Live stream";
  }
  media.appendChild(el);
}

function renderProduct(sale) {
  const card = byId("product-card");
  if ((sale?.sale_id ?? null) !== qtySale) {  // another sale on the card: the quantity starts at 1 again
    qtySale = sale?.sale_id ?? null;
    qty = 1;
  }
  if (sale) qty = Math.min(qty, qtyMax(sale));  // fewer units left than chosen
  const product = productOf(sale);
  const bs = buyState(sale);
  setAttr(card, "data-state", product ? bs.state : "empty");
  const featured = byId("featured-sale");
  setAttr(featured, "data-sale-id", sale?.sale_id ?? null);
  setAttr(featured, "data-product-id", product?.product_id ?? sale?.product_id ?? null);
  renderSave($(".card-save"), product ? product.product_id ?? sale?.product_id : null, product?.title || product?.sku || "");
  renderShare(byId("card-share"), product ? product.product_id ?? sale?.product_id : null, product?.title || product?.sku || "");
  renderRemind(byId("card-remind"), sale && client.room?.status !== "ended" && client.salePhase(sale, client.serverNow()) === "scheduled"
    ? sale.sale_id : null, product?.title || product?.sku || "");
  if (!product) {
    renderVariants(null);
    renderBuy(bs, sale);
    return;
  }
  const currency = sale?.currency || product.currency || "EUR";
  setText(byId("pinned-title"), product.title || product.sku || "");
  setText(byId("product-kicker"), sale ? "Flash sale" : "Pinned");
  const price = sale ? sale.unit_price : product.unit_price;
  setText(byId("pinned-price"), formatMoney(price, currency));
  const was = sale && product.unit_price && product.unit_price > sale.unit_price ? formatMoney(product.unit_price, currency) : "";
  setText(byId("price-was"), was);

  const thumb = byId("product-thumb");
  const img = product.image_url || "";
  // Keyed by the product, not by image_url alone: two products without an image share "".
  const thumbKey = JSON.stringify([product.product_id || "", img, product.title || ""]);
  if (thumb.dataset.key !== thumbKey) {
    thumb.dataset.key = thumbKey;
    thumb.replaceChildren();
    if (img) {
      const i = document.createElement("img");
      i.src = img; i.alt = ""; i.loading = "lazy";
      thumb.appendChild(i);
    } else {
      const t = (product.title || "?").trim();
      thumb.textContent = t.split(/\s+/).slice(0, 2).map((w) => w[0]).join("").toUpperCase();
    }
    thumb.style.setProperty("--h", hue(product.product_id || t));
  }

  const box = byId("sale-box");
  show(box, !!sale);
  if (sale) {
    const now = client.serverNow();
    const phase = client.salePhase(sale, now);
    const cd = byId("countdown");
    let cdText = "";
    if (phase === "scheduled") cdText = `Starts in ${fmtClock(sale.starts_at - now)}`;
    else if (phase === "open") cdText = sale.ends_at ? `Ends in ${fmtClock(sale.ends_at - now)}` : "On now";
    else if (phase === "sold_out") cdText = "Sold out";
    else cdText = "Ended";
    setText(cd, cdText);
    setAttr(cd, "data-phase", phase);
    const left = typeof sale.units_left === "number" ? sale.units_left : sale.allocated;
    const ul = byId("units-left");
    setText(ul, left > 0 ? `${left} of ${sale.allocated} left` : "0 left");
    setAttr(ul, "data-units", left);
    const pct = sale.allocated ? Math.max(0, Math.min(100, (left / sale.allocated) * 100)) : 0;
    byId("stock-fill").style.width = `${pct}%`;
  }
  renderVariants(sale);
  renderBuy(bs, sale, product);
}

/** The variant picker of a sale of variants: one option per variant's sale (label, units left or its
 *  state), the card's one checked; sold-out and ended variants cannot be picked. */
function renderVariants(sale) {
  const box = byId("variant-picker");
  const variants = sale?.group ? client.variantsOf(sale) : [];
  show(box, variants.length > 0);
  const key = variants.map((s) => s.sale_id).join("|");
  if (key !== variantKey) {
    variantKey = key;
    variantEls.clear();
    box.replaceChildren(...variants.map((s) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "variant-option";
      button.dataset.testid = `variant-option-${s.sale_id}`;
      button.dataset.saleId = s.sale_id;
      button.setAttribute("role", "radio");
      const label = document.createElement("span");
      label.className = "variant-label";
      const units = document.createElement("span");
      units.className = "variant-units";
      button.append(label, units);
      variantEls.set(s.sale_id, { button, label, units });
      return button;
    }));
  }
  if (!variants.length) return;
  const now = client.serverNow();
  const liveEnded = client.room?.status === "ended";
  for (const s of variants) {
    const e = variantEls.get(s.sale_id);
    let phase = client.salePhase(s, now);
    if (liveEnded || s.closed_reason === "live_ended") phase = "closed";
    const left = typeof s.units_left === "number" ? s.units_left : s.allocated;
    const label = s.variant || s.sku || s.sale_id;
    setText(e.label, label);
    const unitsText = phase === "closed" ? "Ended" : phase === "sold_out" || left <= 0 ? "Sold out" : `${left} left`;
    setText(e.units, unitsText);
    setAttr(e.button, "data-state", phase);
    const picked = s.sale_id === sale.sale_id;
    setAttr(e.button, "aria-checked", picked ? "true" : "false");
    setAttr(e.button, "data-selected", picked ? "true" : null);
    setAttr(e.button, "data-held", activeHold(s.sale_id) ? "true" : null);
    setAttr(e.button, "aria-label", `${label}: ${unitsText}${activeHold(s.sale_id) ? ", reserved for you" : ""}`);
    e.button.disabled = phase === "sold_out" || phase === "closed";
  }
}

/** The quantity picker next to Buy: shown while the card's sale can be bought (or a LIMIT / SOLD_OUT
 *  answer may be retried with fewer), when more than one unit may be asked for. */
function renderQty(bs, sale) {
  const max = qtyMax(sale);
  const retry = (bs.state === "limit" || bs.state === "sold-out") && qty > 1;
  const visible = !!sale && (["buy", "pending", "not-started"].includes(bs.state) || retry) && (max > 1 || qty > 1);
  show(byId("qty-picker"), visible);
  if (!visible) return;
  const busy = bs.state === "pending";
  setText(byId("qty-value"), String(qty));
  setAttr(byId("qty-value"), "data-max", max);
  byId("qty-minus").disabled = busy || qty <= 1;
  byId("qty-plus").disabled = busy || qty >= max;
}

const BUTTON_LABEL = {
  "none": "Not on sale",
  "not-started": "Starts soon",
  "buy": "Buy now",
  "pending": "Reserving…",
  "reserved": "Reserved",
  "confirmed": "Purchased ✓",
  "sold-out": "Sold out",
  "limit": "Limit reached",
  "ended": "Sale ended",
  "signin": "Sign in to buy",
  "members-only": "Members only",
};

function renderBuy(bs, sale, product) {
  const btn = byId("buy-button");
  const pay = byId("pay-button");
  const rel = byId("release-button");
  const status = byId("status");
  const now = client.serverNow();
  let label = BUTTON_LABEL[bs.state];
  if (bs.state === "not-started" && sale) label = `Starts in ${fmtClock(sale.starts_at - now)}`;
  if (bs.state === "buy" && bs.bought) label = "Buy another";
  if (bs.state === "buy" && qtyOf(sale) > 1) {
    label = `Buy ${qtyOf(sale)} · ${formatMoney(sale.unit_price * qtyOf(sale), sale.currency || product?.currency || "EUR")}`;
  }
  const offline = isOffline();
  if (offline && bs.state === "buy") label = "Offline";
  setText(btn, label);
  setAttr(btn, "data-state", bs.state);
  // What a tap buys, pays or releases is fixed here, with what the card shows (onBuy, onPay, onRelease).
  setAttr(btn, "data-sale-id", sale?.sale_id ?? null);
  setAttr(pay, "data-hold", bs.state === "reserved" ? bs.hold.hold : null);
  setAttr(rel, "data-hold", bs.state === "reserved" ? bs.hold.hold : null);
  btn.disabled = bs.state !== "buy" || offline || performance.now() < swapGuardUntil;
  show(btn, bs.state !== "reserved");
  renderQty(bs, sale);

  show(pay, bs.state === "reserved");
  show(rel, bs.state === "reserved");
  rel.disabled = offline;
  let statusText = "";
  let statusState = bs.state;
  const currency = sale?.currency || product?.currency || "EUR";
  const chosen = renderCouponPicker(bs);
  if (bs.state === "reserved") {
    const h = bs.hold;
    const total = formatMoney(chosen ? chosen.quote.total : (sale?.unit_price ?? 0) * (h.qty || 1), currency);
    const busy = paying.has(h.hold);
    setText(pay, busy ? "Paying…" : `Pay ${total}`);
    pay.disabled = busy && !offline;
    // Offline: greyed out but still tappable, so that a tap is answered (onPay) instead of ignored.
    setAttr(pay, "aria-disabled", offline ? "true" : null);
    const left = h.pay_by ? fmtClock(h.pay_by - now) : "";
    if (offline) {
      statusText = `You are offline — reconnecting… Your reservation is kept${left ? ` for ${left}` : ""}: pay once you are back.`;
      statusState = "offline";
    } else {
      statusText = left ? `Reserved for you · pay within ${left}` : "Reserved for you";
    }
  } else if (offline && ["buy", "pending", "not-started"].includes(bs.state)) {
    statusText = bs.state === "pending"
      ? "You are offline — reconnecting… Your tap goes out again (the same one) as soon as the connection is back."
      : "You are offline — reconnecting… Buy comes back with the connection.";
    statusState = "offline";
  } else if (bs.state === "confirmed" || (bs.bought > 0 && sale)) {
    const settled = client.holdsOf(sale.sale_id).find((h) => h.status === "confirmed" && h.settled);
    const order = client.holdsOf(sale.sale_id).find((h) => h.status === "confirmed");
    const o = client.orders.find((x) => x.order_id === (order?.order || order?.hold));
    const saved = o?.discount ? ` · coupon −${formatMoney(o.discount, o.currency || currency)}, paid ${formatMoney(o.total, o.currency || currency)}` : "";
    statusText = `Order confirmed ✓ ${shortId(order?.order || order?.hold)}${settled ? "" : ""}${saved}`;
    statusState = "confirmed";
  } else if (bs.state === "sold-out") {
    statusText = notes.get(sale?.sale_id)?.code === "SOLD_OUT" ? "So close! Someone was faster: sold out." : "All units are taken.";
  } else if (bs.state === "limit") {
    statusText = limitText(sale, true);
  } else if (bs.state === "ended") {
    if (notes.get(sale?.sale_id)?.code === "EXPIRED") statusText = "Your reservation expired and the sale has ended.";
    else if (bs.liveEnded) statusText = "The live has ended: this sale is closed.";
    else statusText = "This flash sale has ended.";
  } else if (bs.state === "not-started" && sale) {
    const at = new Date(sale.starts_at - client.offset);
    statusText = `Opens at ${at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })} · get ready!`;
  } else if (bs.state === "buy" && sale) {
    const note = notes.get(sale.sale_id);
    statusText = note?.code === "EXPIRED" ? "Your reservation expired: it was not paid in time. Try again while stock lasts." :
      `Reserve now, pay within ${fmtSpan(sale.hold_ttl_ms || 300000)}.`;
    if (note?.code === "EXPIRED") statusState = "expired";
    // a quantity was refused: the same tap with fewer units may go through
    if (note?.code === "LIMIT") statusText = limitText(sale, false);
    if (note?.code === "SOLD_OUT") {
      const left = typeof sale.units_left === "number" ? sale.units_left : sale.allocated;
      statusText = `Not enough left for ${note.qty || 1}: ${left} left.`;
    }
  } else if (bs.state === "signin") {
    statusText = bs.phase === "scheduled" && sale
      ? `Opens in ${fmtClock(sale.starts_at - now)} · ${SIGNIN_TEXT}` : SIGNIN_TEXT;
  } else if (bs.state === "members-only") {
    statusText = MEMBERS_TEXT;
  } else if (bs.state === "pending") {
    statusText = "Reserving your unit…";
  } else if (bs.state === "none" && product) {
    statusText = "No flash sale running for this product yet.";
  }
  setText(status, statusText);
  setAttr(status, "data-state", statusState);
}

// ---------------------------------------------------------------------------------------------
// the "New deal" notice and the show's bag

function saleTitle(sale, withVariant = true) {
  const p = client.products.find((x) => x.product_id === sale.product_id);
  const title = p?.title || sale.title || sale.sku || sale.product_id || "";
  return withVariant && sale.variant && p?.title ? `${title} · ${sale.variant}` : title;
}

function renderNotice(featured) {
  const box = byId("deal-notice");
  const btn = byId("new-deal-notice");
  const deal = featured ? noticeSale(featured) : null;
  show(box, !!deal);
  setAttr(btn, "data-sale-id", deal?.sale_id ?? null);
  if (!deal) return;
  const now = client.serverNow();
  const price = formatMoney(deal.unit_price, deal.currency || "EUR");
  const phase = client.salePhase(deal, now);
  const when = phase === "scheduled" ? ` · in ${fmtClock(deal.starts_at - now)}` : "";
  setText(byId("new-deal-text"), `New deal: ${saleTitle(deal, false)} ${price}${when} — view`);
  setAttr(btn, "data-phase", phase);
}

const BAG_STATE = { scheduled: "Upcoming", open: "On now", sold_out: "Sold out", closed: "Ended", none: "Not on sale" };

const PHASE_RANK = { open: 0, scheduled: 1, sold_out: 2, closed: 3 };

/** The bag's rows: the sales (open, scheduled, sold out, ended in the last 10 minutes; the one on the
 *  card and the ones I hold always) by start time, a fixed order that a change of state never
 *  reshuffles; a sale of variants is one row (`g:<group>`: its variants inside, its phase the liveliest
 *  of theirs); then the products of the live that have no deal listed. */
function bagItems(featured) {
  const now = client.serverNow();
  const items = [];
  const groups = new Map();
  const withSale = new Set();
  for (const s of client.salesList()) {
    const phase = client.salePhase(s, now);
    const live = phase === "open" || phase === "scheduled";
    const keep = live || (s.ends_at ?? now) > now - RECENT_MS || s.sale_id === featured?.sale_id || !!activeHold(s.sale_id);
    if (!keep) continue;
    withSale.add(s.product_id);
    if (s.group) {
      const g = groups.get(s.group);
      if (!g) {
        const item = { key: `g:${s.group}`, group: s.group, sale: s, phase };
        groups.set(s.group, item);
        items.push(item);
      } else if ((PHASE_RANK[phase] ?? 9) < (PHASE_RANK[g.phase] ?? 9)) {
        g.phase = phase;
      }
      continue;
    }
    items.push({ key: `s:${s.sale_id}`, sale: s, phase });
  }
  for (const g of groups.values()) {  // the variant the row names: the card's, else the preferred one
    g.sale = featured?.group === g.group ? featured : preferredVariant(g.sale);
  }
  for (const p of client.products) {
    if (!withSale.has(p.product_id)) items.push({ key: `p:${p.product_id}`, product: p });
  }
  return shelfOrdered(items);
}

/** Each viewer their own shelf (docs/PROTOCOL.md): with a personal `shelf` from the server, rows of the
 *  same phase (open deals, then scheduled, then the rest, then products without a deal) follow the
 *  viewer's order of products; otherwise, and within one product, the host's order stays. */
function shelfOrdered(items) {
  const shelf = client.shelf;
  if (!shelf || !shelf.personal) return items;
  const rank = new Map(shelf.order.map((id, i) => [id, i]));
  const productOf = (it) => (it.sale ? it.sale.product_id : it.product?.product_id);
  const phaseOf = (it) => (it.sale ? (PHASE_RANK[it.phase] ?? 9) : 10);
  return items.map((it, i) => ({ it, i })).sort((a, b) =>
    phaseOf(a.it) - phaseOf(b.it)
    || (rank.get(productOf(a.it)) ?? 1e9) - (rank.get(productOf(b.it)) ?? 1e9)
    || a.i - b.i).map((x) => x.it);
}

function bagRow(item) {
  const li = document.createElement("li");
  li.className = "bag-row";
  li.dataset.testid = item.group ? `bag-row-${item.group}`
    : item.sale ? `bag-row-${item.sale.sale_id}` : `bag-product-${item.product.product_id}`;
  if (item.group) li.dataset.group = item.group;
  if (item.sale) li.dataset.saleId = item.sale.sale_id;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "bag-row-main";
  const part = (tag, cls, testid) => {
    const el = document.createElement(tag);
    el.className = cls;
    if (testid) el.dataset.testid = testid;
    return el;
  };
  const thumb = part("span", "product-thumb bag-thumb");
  const info = part("span", "bag-info");
  const title = part("span", "bag-title", "bag-title");
  const meta = part("span", "bag-meta");
  const state = part("span", "state-tag bag-state", "bag-state");
  const countdown = part("span", "bag-countdown", "bag-countdown");
  const flag = part("span", "bag-flag", "bag-flag");
  meta.append(state, countdown, flag);
  info.append(title, meta);
  // a sale of variants: its variants, each with its units left
  const variants = item.group ? part("span", "bag-variants", "bag-variants") : null;
  if (variants) info.append(variants);
  const right = part("span", "bag-right");
  const price = part("span", "bag-price", "bag-price");
  const was = part("span", "price-was bag-was", "bag-was");
  const units = part("span", "bag-units", "bag-units");
  right.append(price, was, units);
  button.append(thumb, info, right);
  const save = saveButton();
  const share = shareButton();
  const remind = remindButton();
  li.append(button, save, share, remind);
  return { li, button, thumb, title, state, countdown, flag, price, was, units, variants, save, share, remind };
}

function renderBag(featured) {
  const items = bagItems(featured);
  const list = byId("bag-list");
  const keys = new Set(items.map((i) => i.key));
  for (const [k, row] of bagRows) if (!keys.has(k)) { row.li.remove(); bagRows.delete(k); }
  const order = items.map((i) => i.key).join("|");
  for (const item of items) {
    let row = bagRows.get(item.key);
    if (!row) { row = bagRow(item); bagRows.set(item.key, row); }
    updateBagRow(row, item, featured);
  }
  if (order !== bagOrder) {
    bagOrder = order;
    for (const item of items) list.appendChild(bagRows.get(item.key).li); // moves rows into order
  }
  const count = byId("bag-count");
  const live = client.room?.status === "ended" ? 0 : items.filter((i) => i.phase === "open").length;
  setText(count, String(items.length));
  setAttr(count, "data-live", live);
  setText(byId("bag-head-count"), items.length ? `· ${items.length}` : "");
  show(byId("bag-empty"), items.length === 0);
  const button = byId("bag-button");
  setAttr(button, "aria-label", `Products and deals of this live: ${items.length}${live ? `, ${live} on now` : ""}`);
}

function updateBagRow(row, item, featured) {
  const now = client.serverNow();
  const { sale } = item;
  const product = sale ? client.products.find((x) => x.product_id === sale.product_id) : item.product;
  const currency = sale?.currency || product?.currency || "EUR";
  const title = product?.title || sale?.title || product?.sku || "";
  setText(row.title, title);
  renderSave(row.save, sale ? sale.product_id : product?.product_id, title);
  renderShare(row.share, sale ? sale.product_id : product?.product_id, title, row.li);
  const thumbKey = JSON.stringify([product?.product_id || sale?.product_id || "", product?.image_url || "", title]);
  if (row.thumb.dataset.key !== thumbKey) {
    row.thumb.dataset.key = thumbKey;
    row.thumb.replaceChildren();
    if (product?.image_url) {
      const i = document.createElement("img");
      i.src = product.image_url; i.alt = ""; i.loading = "lazy";
      row.thumb.appendChild(i);
    } else {
      row.thumb.textContent = (title || "?").trim().split(/\s+/).slice(0, 2).map((w) => w[0]).join("").toUpperCase();
    }
    row.thumb.style.setProperty("--h", hue(product?.product_id || sale?.product_id || title));
  }
  if (!sale) {
    setAttr(row.li, "data-state", "none");
    setText(row.state, BAG_STATE.none);
    setAttr(row.state, "data-state", "none");
    setText(row.price, formatMoney(product.unit_price, currency));
    setText(row.was, "");
    setText(row.units, "");
    setText(row.countdown, "");
    setText(row.flag, client.pinned?.product_id === product.product_id ? "Pinned" : "");
    setAttr(row.li, "data-featured", null);
    row.button.disabled = true;
    renderRemind(row.remind, null);
    return;
  }
  // The live ended: nothing of it can be bought any more, whatever a sale's own clock says.
  const liveEnded = sale.closed_reason === "live_ended" || client.room?.status === "ended";
  const phase = liveEnded && (item.phase === "open" || item.phase === "scheduled") ? "closed" : item.phase;
  setAttr(row.li, "data-state", phase);
  setText(row.state, BAG_STATE[phase] || phase);
  setAttr(row.state, "data-state", phase);
  renderRemind(row.remind, phase === "scheduled" ? sale.sale_id : null, title);
  setText(row.price, formatMoney(sale.unit_price, currency));
  setText(row.was, product?.unit_price > sale.unit_price ? formatMoney(product.unit_price, currency) : "");
  // a sale of variants: units summed over its variants, which are listed with their own
  const sales = item.group ? client.variantsOf(sale) : [sale];
  const leftOf = (s) => (typeof s.units_left === "number" ? s.units_left : s.allocated) || 0;
  const left = sales.reduce((n, s) => n + leftOf(s), 0);
  const allocated = sales.reduce((n, s) => n + (s.allocated || 0), 0);
  setText(row.units, phase === "sold_out" || left <= 0 ? "0 left" : `${left} of ${allocated} left`);
  setAttr(row.units, "data-units", left);
  setAttr(row.li, "data-sale-id", sale.sale_id);  // a group row: the variant a tap puts on the card
  if (row.variants) {
    setText(row.variants, sales.map((s) => {
      const p = client.salePhase(s, now);
      return `${s.variant || s.sku} ${p === "closed" ? "(ended)" : p === "sold_out" || leftOf(s) <= 0 ? "(sold out)" : `(${leftOf(s)})`}`;
    }).join(" · "));
    setAttr(row.variants, "data-count", sales.length);
  }
  let cd = "";
  if (phase === "scheduled") cd = `Starts in ${fmtClock(sale.starts_at - now)}`;
  else if (phase === "open" && sale.ends_at) cd = `Ends in ${fmtClock(sale.ends_at - now)}`;
  setText(row.countdown, cd);
  const held = sales.some((s) => activeHold(s.sale_id));
  const bought = sales.some((s) => confirmedQty(s.sale_id) > 0);
  setText(row.flag, held ? "Reserved · pay" : bought ? "Bought ✓" : "");
  setAttr(row.flag, "data-kind", held ? "reserved" : bought ? "bought" : null);
  const isFeatured = item.group ? featured?.group === item.group : sale.sale_id === featured?.sale_id;
  setAttr(row.li, "data-featured", isFeatured ? "true" : null);
  setAttr(row.button, "aria-current", isFeatured ? "true" : null);
  // Only a deal that can still be bought (or my reservation) can be put on the card.
  row.button.disabled = !(phase === "open" || phase === "scheduled" || held);
}

function onBagClick(ev) {
  const remind = ev.target.closest(".remind-button");
  if (remind) { onRemindTap(remind.dataset.saleId); return; }  // nor does a reminder
  const share = ev.target.closest(".share-button");
  if (share) { openEarn(share.dataset.productId); return; }  // sharing never puts the row on the card
  const save = ev.target.closest(".save-button");
  if (save) { onSaveTap(save.dataset.productId); return; }  // saving never puts the row on the card
  const li = ev.target.closest(".bag-row");
  const id = li?.dataset.saleId;
  if (!id || li.querySelector(".bag-row-main")?.disabled) return;
  viewSale(id);
  if (window.matchMedia("(max-width: 820px)").matches) setBagOpen(false); // the sheet covers the card
}

function setBagOpen(open) {
  if (open && ordersOpen) setOrdersOpen(false);  // one panel at a time
  bagOpen = open;
  show(byId("bag-sheet"), open);
  show(byId("bag-backdrop"), open);
  setAttr(byId("bag-button"), "aria-expanded", open ? "true" : "false");
  document.body.classList.toggle("bag-open", open);
  if (open) render();
}

// ---------------------------------------------------------------------------------------------
// Save for later (docs/CLIENT.md, "Save for later"): a bookmark toggle on the card and on each row of
// the bag (data-testid save-<product_id>, aria-pressed). It takes no stock: an interest signal the
// host's dashboard counts. The viewer's saved products of this room are read after the first join of
// each identity (GET /api/me/saved, client.savedProducts()); a tap saves or removes one
// (client.saveProduct(), PUT / DELETE /api/me/saved/{room}/{product}), and the button flips once the
// server answered. Without a token (anonymous) a tap says that saving needs signing in, as Buy does.

const SAVE_SIGNIN_TEXT = "Saving for later needs signing in: open this live from the shop's site, signed in.";
const SAVE_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M6.5 3.5h11v17L12 16.6l-5.5 3.9z"/></svg>';
// user: whose they are; ids: saved product ids of this room; changed: taps answered while a read ran
// (applied over its answer); busy: product ids with a save or removal in flight; gen: bumped per identity.
const savedState = { user: null, ids: new Set(), loaded: false, loading: false, changed: new Map(), busy: new Set(), gen: 0 };

function saveButton() {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "save-button bag-save";
  b.setAttribute("aria-pressed", "false");
  b.innerHTML = `${SAVE_ICON}<span class="save-label" aria-hidden="true">Save</span>`;
  return b;
}

function isSaved(productId) {
  return !!identity && savedState.user === identity.user && savedState.ids.has(productId);
}

/** Another identity (or none): what was read or tapped belonged to the previous one. */
function resetSaved() {
  Object.assign(savedState, { user: identity?.user ?? null, ids: new Set(), loaded: false, loading: false,
    changed: new Map(), busy: new Set(), gen: savedState.gen + 1 });
}

/** Read my saved products of this room once per identity (after a join; a failed read is tried
 *  again after the next join). */
async function loadSaved() {
  if (!client || !identity) return;
  if (savedState.user !== identity.user) resetSaved();
  if (savedState.loaded || savedState.loading) return;
  const gen = savedState.gen;
  savedState.loading = true;
  savedState.changed.clear();
  try {
    const items = await client.savedProducts({ room: roomId });
    if (gen !== savedState.gen) return;
    const ids = new Set(items.map((i) => i.product_id));
    for (const [id, on] of savedState.changed) { if (on) ids.add(id); else ids.delete(id); }
    savedState.ids = ids;
    savedState.loaded = true;
  } catch { /* kept as it is; read again after the next join */ } finally {
    if (gen === savedState.gen) { savedState.loading = false; savedState.changed.clear(); }
    render();
  }
}

async function onSaveTap(productId) {
  if (!productId || !client) return;
  if (!identity) { toast(SAVE_SIGNIN_TEXT, "error"); return; }
  if (savedState.user !== identity.user) resetSaved();
  if (savedState.busy.has(productId)) return;  // one change at a time per product
  const on = !isSaved(productId);
  const gen = savedState.gen;
  savedState.busy.add(productId);
  render();
  try {
    await client.saveProduct(productId, on, { room: roomId });
    if (gen !== savedState.gen) return;
    if (on) savedState.ids.add(productId); else savedState.ids.delete(productId);
    if (savedState.loading) savedState.changed.set(productId, on);
  } catch (err) {
    if (gen !== savedState.gen || err.code === "STALE") return;
    if (err.code === "HTTP_401") { onClientError({ detail: { code: "UNAUTHORIZED" } }); return; }
    toast(err.code === "HTTP_404" ? "This product is no longer in the live."
      : `Could not ${on ? "save" : "remove"} it: ${err.message}`, "error");
  } finally {
    if (gen === savedState.gen) savedState.busy.delete(productId);
    render();
  }
}

/** A save toggle for a product (null: hidden): its test id, pressed state, label and hint. */
function renderSave(btn, productId, title) {
  if (!btn) return;
  show(btn, !!productId);
  if (!productId) return;
  setAttr(btn, "data-testid", `save-${productId}`);
  setAttr(btn, "data-product-id", productId);
  const on = isSaved(productId);
  const busy = !!identity && savedState.busy.has(productId);
  setAttr(btn, "aria-pressed", on ? "true" : "false");
  setAttr(btn, "aria-busy", busy ? "true" : null);
  setAttr(btn, "data-state", !identity ? "signin" : busy ? "saving" : on ? "saved" : "unsaved");
  setAttr(btn, "aria-label", `Save for later${title ? `: ${title}` : ""}`);
  setAttr(btn, "title", !identity ? "Sign in to save for later"
    : on ? "Saved for later (nothing is reserved): tap to remove" : "Save for later (reserves nothing)");
  setText(btn.querySelector(".save-label"), on ? "Saved" : "Save");
}

// ---------------------------------------------------------------------------------------------
// My orders (docs/CLIENT.md, "My orders"): my holds (reserved with a pay-by countdown and Pay,
// paid and settling, expired, released) and my settled and refunded orders, in every live, with
// totals per currency. Built from livesale.js's state (holds and orders of this session, live) and
// GET /api/me/orders (client.myOrders()), read when the panel opens, after each of my buys, payments,
// releases, orders and refunds while it is open, and every 30 s while it stays open.

const MY_LABEL = { reserved: "Reserved", paid: "Paid · confirming", expired: "Expired", released: "Released",
  settled: "Settled", refunded: "Refunded" };
const MY_HOLD_RANK = { reserved: 0, expired: 1, released: 1, paid: 2 };  // a later state wins over an earlier one
const MY_LOCAL_STATUS = { held: "reserved", confirmed: "paid", released: "released", expired: "expired" };
const MY_MAX_ORDER_ROWS = 200;
const MY_POLL_MS = 30000;
let ordersOpen = false;
// The last GET /api/me/orders: {reply, user, complete (every order read), loading, again, error, at}
const myData = { reply: null, user: null, complete: false, loading: false, again: false, error: null, at: 0 };
let myRefreshTimer = null;
let myPollTimer = null;
const mySeen = new Map();      // hold id -> server time first seen here (a local hold has no created_at)
const myRows = new Map();      // "h:<hold>" | "o:<order>" -> row elements
let myHoldsOrder = "";
let myOrdersOrder = "";
let myTotalsKey = "";

/** Read GET /api/me/orders soon (coalesced), if the panel is open; a closed panel reads it when opened. */
function refreshMyOrdersSoon(delay = 150) {
  if (!ordersOpen) return;
  clearTimeout(myRefreshTimer);
  myRefreshTimer = setTimeout(refreshMyOrders, delay);
}

async function refreshMyOrders() {
  clearTimeout(myRefreshTimer);
  myRefreshTimer = null;
  if (!client || !identity) return;
  if (myData.loading) { myData.again = true; return; }
  const user = identity.user;
  myData.loading = true;
  myData.again = false;
  render();
  try {
    const reply = await client.myOrders({ limit: 200, maxPages: 10 });
    if (identity?.user !== user) return;
    Object.assign(myData, { reply, user, complete: !reply.next, error: null, at: Date.now() });
  } catch (err) {
    if (identity?.user === user && err.code !== "STALE") {
      myData.error = err;
      refreshMyOrdersSoon(5000);  // retried while the panel is open
    }
  } finally {
    myData.loading = false;
    if (myData.again) refreshMyOrdersSoon(0);
    render();
  }
}

/** Another viewer (setToken, a new guest token): what was read belongs to the previous one. */
function resetMyOrders() {
  Object.assign(myData, { reply: null, user: null, complete: false, error: null, at: 0 });
  if (ordersOpen) refreshMyOrdersSoon(0);
}

function setOrdersOpen(open) {
  if (open && bagOpen) setBagOpen(false);
  ordersOpen = open;
  show(byId("my-orders-sheet"), open);
  show(byId("my-orders-backdrop"), open);
  setAttr(byId("my-orders-button"), "aria-expanded", open ? "true" : "false");
  document.body.classList.toggle("my-orders-open", open);
  clearInterval(myPollTimer);
  myPollTimer = null;
  if (open) {
    refreshMyOrders();
    refreshCouponsSoon(0);
    myPollTimer = setInterval(() => refreshMyOrdersSoon(0), MY_POLL_MS);
  } else {
    clearTimeout(myRefreshTimer);
  }
  render();
}

function mySeenAt(id) {
  if (!mySeen.has(id)) mySeen.set(id, client.serverNow());
  return mySeen.get(id);
}

/** My holds and orders: the last reply merged with what this session learnt since (a hold's later
 *  state wins; an order delivered live is listed at once; a refund is never undone), and the totals. */
function myOrdersModel() {
  const now = client.serverNow();
  const reply = identity && myData.reply && myData.user === identity.user ? myData.reply : null;
  const orders = new Map();
  for (const o of reply?.orders || []) orders.set(o.order_id, { ...o, fromServer: o.status || "settled" });
  for (const o of client.orders) {
    const cur = orders.get(o.order_id);
    const refunded = cur?.status === "refunded" || o.status === "refunded";
    orders.set(o.order_id, { ...(cur || {}), ...o, status: refunded ? "refunded" : "settled", fromServer: cur?.fromServer ?? null });
  }
  const holds = new Map();
  for (const h of reply?.holds || []) {
    if (h && h.hold_id && !orders.has(h.hold_id)) holds.set(h.hold_id, { ...h });
  }
  for (const h of client.holds.values()) {
    if (!h?.hold || orders.has(h.hold) || h.settled) continue;
    const local = MY_LOCAL_STATUS[h.status] || h.status;
    const cur = holds.get(h.hold);
    const sale = client.sales.get(h.sale);
    const qty = h.qty || cur?.qty || 1;
    const status = cur && (MY_HOLD_RANK[cur.status] ?? 0) > (MY_HOLD_RANK[local] ?? 0) ? cur.status : local;
    holds.set(h.hold, {
      ...(cur || {}), hold_id: h.hold, sale_id: h.sale ?? cur?.sale_id, qty, status, pay_by: h.pay_by ?? cur?.pay_by,
      amount: cur?.amount ?? h.amount ?? (sale ? sale.unit_price * qty : null), currency: cur?.currency ?? sale?.currency ?? "EUR",
      created_at: cur?.created_at ?? mySeenAt(h.hold),
    });
  }
  for (const h of holds.values()) {
    // not paid by pay_by: gone (the server's reaper marks it a moment later)
    if (h.status === "reserved" && h.pay_by && h.pay_by <= now && !paying.has(h.hold_id)) h.status = "expired";
  }
  const holdList = Array.from(holds.values()).sort((a, b) => {
    const ra = a.status === "reserved" ? 0 : 1;
    const rb = b.status === "reserved" ? 0 : 1;
    if (ra !== rb) return ra - rb;
    if (ra === 0) return (a.pay_by ?? Infinity) - (b.pay_by ?? Infinity);
    return (b.created_at ?? 0) - (a.created_at ?? 0);
  });
  const orderList = Array.from(orders.values())
    .sort((a, b) => (b.settled_at ?? now) - (a.settled_at ?? now) || String(b.order_id).localeCompare(String(a.order_id)));
  // Totals: the server's (every settled order), plus what arrived since it answered (a new order, a
  // refund), when the reply held every order (otherwise an order missing from it may be counted already).
  let totals = null;
  if (reply) {
    totals = {};
    for (const [cur, t] of Object.entries(reply.totals || {})) {
      const spent = Number(t?.spent) || 0;
      const refunded = Number(t?.refunded) || 0;
      totals[cur] = { orders: Number(t?.orders) || 0, units: Number(t?.units) || 0, spent, refunded,
        net: typeof t?.net === "number" ? t.net : spent - refunded };
    }
    if (myData.complete) {
      for (const o of orders.values()) {
        const added = !o.fromServer;
        const refund = o.status === "refunded" && o.fromServer !== "refunded";
        if (!added && !refund) continue;
        const t = (totals[o.currency || "EUR"] ||= { orders: 0, units: 0, spent: 0, refunded: 0, net: 0 });
        const amount = Number(o.total) || 0;
        if (added) { t.orders += 1; t.units += Number(o.qty) || 0; t.spent += amount; t.net += amount; }
        if (refund) { t.refunded += amount; t.net -= amount; }
      }
    }
  }
  const toPay = holdList.filter((h) => h.status === "reserved").length;
  return { now, reply, holds: holdList, orders: orderList, totals, toPay };
}

/** The reservation a Pay / Cancel of the panel was rendered for, while it can still be paid. */
function myPayableHold(id) {
  const local = heldHold(id);
  if (local) return local;
  if (!client || client.holds.has(id)) return null;  // one of this session's, no longer held
  const h = myOrdersModel().holds.find((x) => x.hold_id === id);
  return h && h.status === "reserved" ? { hold: h.hold_id, sale: h.sale_id, qty: h.qty, pay_by: h.pay_by } : null;
}

function onMyOrdersClick(ev) {
  const btn = ev.target.closest("button[data-hold]");
  if (!btn || btn.disabled) return;
  const id = btn.dataset.hold;
  if (btn.dataset.action === "pay") {
    if (isOffline()) { payHold(heldHold(id) || { hold: id }); return; }  // answered with the offline toast
    const hold = myPayableHold(id);
    if (hold) payHold(hold);
  } else if (btn.dataset.action === "release") {
    releaseHold(myPayableHold(id));
  }
}

function myTitle(saleId, sku) {
  const sale = saleId ? client.sales.get(saleId) : null;
  if (sale) return saleTitle(sale);
  const product = sku ? client.products.find((p) => p.sku === sku) : null;
  return product?.title || sku || "Purchase";
}

function myWhen(serverMs) {
  if (!serverMs) return "";
  const d = new Date(serverMs - client.offset);
  const today = new Date().toDateString() === d.toDateString();
  return today
    ? `today ${d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`
    : d.toLocaleString([], { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
}

function myRow(kind, id) {
  const li = document.createElement("li");
  li.className = "my-row";
  li.dataset.testid = `${kind === "hold" ? "my-hold-row" : "my-order-row"}-${id}`;
  li.dataset.kind = kind;
  const part = (tag, cls, testid) => {
    const el = document.createElement(tag);
    el.className = cls;
    if (testid) el.dataset.testid = testid;
    return el;
  };
  const thumb = part("span", "product-thumb my-thumb");
  const info = part("span", "my-info");
  const title = part("span", "my-title", "my-row-title");
  const meta = part("span", "my-meta");
  const badge = part("span", "my-badge", "my-row-status");
  const when = part("span", "my-when", "my-row-when");
  meta.append(badge, when);
  const ref = part("span", "my-ref", "my-row-ref");
  info.append(title, meta, ref);
  const right = part("span", "my-right");
  const amount = part("span", "my-amount", "my-row-amount");
  const qty = part("span", "my-qty", "my-row-qty");
  right.append(amount, qty);
  li.append(thumb, info, right);
  const row = { li, thumb, title, badge, when, ref, amount, qty, actions: null, pay: null, release: null };
  if (kind === "hold") {
    row.actions = part("span", "my-actions");
    row.pay = part("button", "my-pay", "my-hold-pay");
    row.release = part("button", "link-button my-release", "my-hold-release");
    for (const [b, action] of [[row.pay, "pay"], [row.release, "release"]]) {
      b.type = "button";
      b.dataset.hold = id;
      b.dataset.action = action;
    }
    row.release.textContent = "Cancel";
    row.actions.append(row.pay, row.release);
    li.append(row.actions);
  }
  return row;
}

function myThumb(row, saleId, title) {
  const sale = saleId ? client.sales.get(saleId) : null;
  const product = sale ? client.products.find((p) => p.product_id === sale.product_id) : null;
  const key = JSON.stringify([product?.product_id || saleId || "", product?.image_url || "", title]);
  if (row.thumb.dataset.key === key) return;
  row.thumb.dataset.key = key;
  row.thumb.replaceChildren();
  if (product?.image_url) {
    const i = document.createElement("img");
    i.src = product.image_url; i.alt = ""; i.loading = "lazy";
    row.thumb.appendChild(i);
  } else {
    row.thumb.textContent = (title || "?").trim().split(/\s+/).slice(0, 2).map((w) => w[0]).join("").toUpperCase();
  }
  row.thumb.style.setProperty("--h", hue(product?.product_id || saleId || title));
}

/** Where a hold or order was made, when not in this live: its room or channel. */
function myPlace(x) {
  const place = x.channel || x.room_id;
  return place && place !== roomId ? ` · in ${place}` : "";
}

function updateMyHoldRow(row, h, now, offline) {
  const title = myTitle(h.sale_id, h.sku);
  setText(row.title, title);
  myThumb(row, h.sale_id, title);
  setAttr(row.li, "data-status", h.status);
  setAttr(row.badge, "data-status", h.status);
  setText(row.badge, MY_LABEL[h.status] || h.status);
  const amount = h.amount !== null && h.amount !== undefined ? formatMoney(h.amount, h.currency || "EUR") : "";
  setText(row.amount, amount);
  setText(row.qty, `${h.qty || 1} ×`);
  setText(row.ref, `${shortId(h.hold_id)}${myPlace(h)}`);
  let when = "";
  if (h.status === "reserved") when = h.pay_by ? `pay within ${fmtClock(h.pay_by - now)}` : "pay to confirm";
  else if (h.status === "paid") when = "payment received, confirming…";
  else if (h.status === "expired") when = "not paid in time";
  else if (h.status === "released") when = "you cancelled it";
  setText(row.when, when);
  const reserved = h.status === "reserved";
  show(row.actions, reserved);
  if (reserved) {
    const busy = paying.has(h.hold_id);
    const chosen = chosenCoupon(client.holds.get(h.hold_id) || { hold: h.hold_id, sale: h.sale_id, qty: h.qty });
    const pay = chosen ? formatMoney(chosen.quote.total, chosen.quote.currency) : amount;
    if (chosen) setText(row.when, `${when} · coupon −${formatMoney(chosen.quote.discount, chosen.quote.currency)}`);
    setText(row.pay, busy ? "Paying…" : `Pay ${pay}`.trim());
    row.pay.disabled = busy && !offline;
    setAttr(row.pay, "aria-disabled", offline ? "true" : null);
    row.release.disabled = offline || busy;
  }
}

function updateMyOrderRow(row, o) {
  const title = myTitle(o.sale_id, o.sku);
  setText(row.title, title);
  myThumb(row, o.sale_id, title);
  setAttr(row.li, "data-status", o.status);
  setAttr(row.badge, "data-status", o.status);
  setText(row.badge, MY_LABEL[o.status] || o.status);
  setText(row.amount, formatMoney(o.total ?? (o.unit_price ?? 0) * (o.qty || 1), o.currency || "EUR"));
  setText(row.qty, `${o.qty || 1} ×`);
  setText(row.ref, `${shortId(o.order_id)}${myPlace(o)}${o.discount ? ` · coupon −${formatMoney(o.discount, o.currency || "EUR")}` : ""}`);
  setText(row.when, o.status === "refunded"
    ? (o.refunded_at ? `money back ${myWhen(o.refunded_at)}` : "money back")
    : (o.settled_at ? myWhen(o.settled_at) : "confirmed"));
}

/** Keyed rows in a list, in the given order (moved only when the order changed). */
function syncMyList(list, keys, prevOrder) {
  const order = keys.join("|");
  if (order !== prevOrder) for (const k of keys) list.appendChild(myRows.get(k).li);
  return order;
}

function renderMyTotals(totals) {
  const foot = byId("my-orders-totals");
  const currencies = totals ? Object.keys(totals).sort() : [];
  show(foot, currencies.length > 0);
  const key = JSON.stringify(currencies.map((c) => [c, totals[c]]));
  if (key === myTotalsKey) return;
  myTotalsKey = key;
  foot.replaceChildren();
  for (const cur of currencies) {
    const t = totals[cur];
    const line = document.createElement("div");
    line.className = "my-total";
    line.dataset.testid = `my-orders-total-${cur}`;
    line.dataset.currency = cur;
    const head = document.createElement("div");
    head.className = "my-total-head";
    head.dataset.testid = "my-total-count";
    head.textContent = `${t.orders} ${t.orders === 1 ? "order" : "orders"} · ${t.units} ${t.units === 1 ? "unit" : "units"}`;
    line.append(head);
    for (const [name, label] of [["spent", "Spent"], ["refunded", "Refunded"], ["net", "Net"]]) {
      const cell = document.createElement("span");
      cell.className = `my-total-cell my-total-${name}`;
      const l = document.createElement("span");
      l.className = "my-total-label";
      l.textContent = label;
      const v = document.createElement("strong");
      v.dataset.testid = `my-total-${name}`;
      v.textContent = formatMoney(t[name], cur);
      cell.append(l, v);
      line.append(cell);
    }
    foot.append(line);
  }
}

function renderMyOrders() {
  if (!client) return;
  const m = myOrdersModel();
  const count = byId("my-orders-count");
  setText(count, String(m.toPay));
  show(count, m.toPay > 0);
  setAttr(byId("my-orders-button"), "aria-label", m.toPay ? `My orders: ${m.toPay} to pay` : "My orders");
  if (!ordersOpen) return;
  const sheet = byId("my-orders-sheet");
  const state = !identity ? "signin" : m.reply ? (myData.error ? "error" : "ready") : myData.error ? "error" : "loading";
  setAttr(sheet, "data-state", state);
  setText(byId("my-orders-sync"), myData.loading ? "Updating…" : "");
  show(byId("my-orders-signin"), !identity);
  const err = byId("my-orders-error");
  show(err, !!identity && !!myData.error);
  if (myData.error) {
    setText(err, `Could not load your orders (${myData.error.code || myData.error.message}); retrying…${m.reply ? " Showing the last list." : ""}`);
  }
  const holdKeys = [];
  const orderKeys = [];
  const offline = isOffline();
  for (const h of m.holds) {
    const k = `h:${h.hold_id}`;
    if (!myRows.has(k)) myRows.set(k, myRow("hold", h.hold_id));
    updateMyHoldRow(myRows.get(k), h, m.now, offline);
    holdKeys.push(k);
  }
  for (const o of m.orders.slice(0, MY_MAX_ORDER_ROWS)) {
    const k = `o:${o.order_id}`;
    if (!myRows.has(k)) myRows.set(k, myRow("order", o.order_id));
    updateMyOrderRow(myRows.get(k), o);
    orderKeys.push(k);
  }
  const keep = new Set([...holdKeys, ...orderKeys]);
  for (const [k, row] of myRows) if (!keep.has(k)) { row.li.remove(); myRows.delete(k); }
  myHoldsOrder = syncMyList(byId("my-holds-list"), holdKeys, myHoldsOrder);
  myOrdersOrder = syncMyList(byId("my-orders-list"), orderKeys, myOrdersOrder);
  show(byId("my-holds-heading"), holdKeys.length > 0);
  show(byId("my-orders-heading"), orderKeys.length > 0);
  const loaded = !!m.reply || !!myData.error;
  const coupons = renderWallet(m.now);
  show(byId("my-orders-empty"), !!identity && loaded && !holdKeys.length && !orderKeys.length && !coupons);
  renderMyTotals(m.totals);
}

// The chat list scrolls inside its own box and follows new comments while it is scrolled to the
// bottom; a viewer who scrolled up to read is left where they are until they scroll back down.
const commentEls = new Map();
let chatStick = true;
let chatWatched = false;
function watchChat(list) {
  chatWatched = true;
  const atBottom = () => list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.addEventListener("scroll", () => { chatStick = atBottom(); }, { passive: true });
  // The box itself changes size (the phone's product card grows, the keyboard opens): stay at the bottom.
  if (typeof ResizeObserver === "function") {
    new ResizeObserver(() => { if (chatStick) list.scrollTop = list.scrollHeight; }).observe(list);
  }
}
function renderComments() {
  const list = byId("comments");
  if (!chatWatched) watchChat(list);
  const ids = new Set(client.comments.map((c) => c.id));
  for (const [id, el] of commentEls) {
    if (!ids.has(id)) { el.remove(); commentEls.delete(id); }
  }
  const atBottom = chatStick;
  let added = false;
  for (const c of client.comments) {
    if (commentEls.has(c.id)) continue;
    const li = document.createElement("li");
    li.className = "comment";
    li.dataset.testid = "comment";
    li.dataset.id = c.id;
    li.dataset.user = c.user;
    if (identity && c.user === identity.user) li.classList.add("mine");
    const name = document.createElement("span");
    name.className = "comment-name";
    name.textContent = c.name || c.user;
    name.style.setProperty("--h", hue(c.user));
    const text = document.createElement("span");
    text.className = "comment-text";
    text.textContent = c.text;
    const team = c.team ? client.teamOf(c.team) : null;
    if (team) {  // a fan team member: the team's badge before the name
      const badge = document.createElement("span");
      badge.className = "comment-badge";
      badge.dataset.testid = "comment-badge";
      badge.dataset.team = team.team_id;
      badge.textContent = team.badge;
      badge.title = `Team ${team.name}`;
      badge.setAttribute("aria-label", `team ${team.name}`);
      badge.style.setProperty("--team", team.colour);
      li.dataset.team = team.team_id;
      li.append(badge);
    }
    li.append(name, text);
    list.appendChild(li);
    commentEls.set(c.id, li);
    added = true;
  }
  if (added && atBottom) list.scrollTop = list.scrollHeight;
}

const BAG_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M7 7V6a5 5 0 0110 0v1h3l-1 14H5L4 7h3zm2 0h6V6a3 3 0 00-6 0v1z"/></svg>';
const tickerEls = new Map();
function renderTicker() {
  const box = byId("ticker");
  const now = client.serverNow();
  const recent = client.bought.filter((b) => now - (b.ts || now) < 8000).slice(-3);
  const keys = new Set(recent.map((b) => `${b.ts}|${b.name}|${b.sale_id}`));
  for (const [k, el] of tickerEls) if (!keys.has(k)) { el.remove(); tickerEls.delete(k); }
  for (const b of recent) {
    const k = `${b.ts}|${b.name}|${b.sale_id}`;
    if (tickerEls.has(k)) continue;
    const el = document.createElement("div");
    el.className = "ticker-item";
    el.dataset.testid = "ticker-item";
    const title = client.sales.get(b.sale_id)?.title || "it";
    el.innerHTML = BAG_ICON;
    el.append(`${b.name} just bought ${b.qty > 1 ? b.qty + " × " : ""}${title}`);
    box.appendChild(el);
    tickerEls.set(k, el);
  }
}

// ---------------------------------------------------------------------------------------------
// Live extras (docs/CLIENT.md, "Fan teams, polls, coupon drops and lucky draws"): the fan teams (the
// picker is also the live leaderboard), one card per poll, coupon drop and lucky draw, the wallet in
// "My orders" and the coupon picker next to Pay. State comes from livesale.js (client.teams,
// leaderboard, polls, drops, draws, myTeam, myVotes, myClaims, myEntries, wins, coupons), counts from
// the ticks; every countdown runs on the server clock (client.serverNow()).

const POLL_SHOWN_MS = 3 * 60000;   // a closed poll's result stays on its card this long
const DROP_SHOWN_MS = 60000;       // an ended drop's card stays this long
const DRAW_SHOWN_MS = 10 * 60000;  // a drawn draw's result stays this long (longer while I won a prize to pay)
const EXTRAS_KEY = () => `livesale.extras.${roomId}.${identity?.user || "anon"}`;
const extraEls = new Map();        // "poll:<id>" | "drop:<id>" | "draw:<id>" -> card elements
const dismissed = new Set();       // card keys the viewer closed
const voting = new Set();          // poll ids with a vote in flight
const claiming = new Set();        // drop ids with a claim in flight
const entering = new Set();        // draw ids with an entry in flight
const couponChoice = new Map();    // hold id -> drop id of the coupon to pay with ("" : none)
const teamEls = new Map();         // team id -> its picker button's parts
let teamKey = "";
let teamBusy = false;
let teamNote = null;               // {code, text, kind, until?, shownUntil}: the last refusal (cooldown, locked)
const TEAM_NOTE_MS = 6000;         // how long a refusal other than a cooldown stays on the team bar
let extrasOrder = "";
let pollsAsked = new Set();        // open polls whose `you` was read (GET /api/polls/{poll}) this session
let couponsTimer = null;

const CLAIM_TEXT = {
  CLAIMED: "Yours! It is in your wallet: pick it when you pay.",
  ALREADY_CLAIMED: "You have this coupon already: it is in your wallet.",
  ALL_CLAIMED: "So close! Every coupon of this drop was claimed.",
  NOT_STARTED: "Not open yet: claim when the countdown ends.",
  ENDED: "Too late: this drop has ended.",
  TEAM_ONLY: "This drop is for another team's fans.",
  NOT_FOUND: "This drop is no longer available.",
  RATE_LIMITED: "Too fast: try again in a moment.",
};
const ENTRY_TEXT = {
  ENTERED: "You're in! Stay in the live until the draw.",
  ALREADY_ENTERED: "You're in already. Stay in the live until the draw.",
  NOT_ELIGIBLE: "Not eligible yet.",
  ENDED: "Entries have closed.",
  NOT_FOUND: "This draw is no longer available.",
  RATE_LIMITED: "Too fast: try again in a moment.",
};
const COUPON_REFUSAL = {
  COUPON_NOT_APPLICABLE: "This coupon does not apply to this purchase.",
  COUPON_USED: "This coupon was used for another payment: pay without it or pick another one.",
  COUPON_EXPIRED: "This coupon has expired.",
};

/** A coupon's (or a drop's) value in words: "€5.00 off", "20% off". */
function couponValue(c) {
  if (!c) return "";
  return c.kind === "percent" ? `${c.value}% off` : `${formatMoney(c.value, c.currency || "EUR")} off`;
}

/** A coupon's (or a drop's) conditions: minimum spend, the products or sales it applies to. */
function couponTerms(c) {
  const parts = [];
  if (c.min_spend) parts.push(`orders from ${formatMoney(c.min_spend, c.currency || "EUR")}`);
  const products = (c.products || []).map((id) => client.products.find((p) => p.product_id === id)?.title || id);
  const sales = (c.sales || []).map((id) => { const s = client.sales.get(id); return s ? saleTitle(s) : id; });
  const on = [...products, ...sales];
  parts.push(on.length ? `on ${on.join(", ")}` : "on every deal of this live");
  return parts.join(" · ");
}

function teamLabel(teamId) {
  const t = client?.teamOf(teamId);
  return t ? `${t.badge} ${t.name}` : teamId;
}

function loadExtras() {
  if (!client || !identity) return;
  let saved = null;
  try { saved = JSON.parse(localStorage.getItem(EXTRAS_KEY()) || "null"); } catch { saved = null; }
  for (const [id, e] of Object.entries(saved?.entries || {})) if (!client.myEntries.has(id)) client.myEntries.set(id, e);
  for (const [id, w] of Object.entries(saved?.wins || {})) if (!client.wins.has(id)) client.wins.set(id, w);
  if (saved?.team && !client.myTeam) client.myTeam = saved.team;
}

function saveExtras() {
  if (!client || !identity) return;
  const keep = (m) => Object.fromEntries(Array.from(m.entries()).slice(-30));
  try {
    localStorage.setItem(EXTRAS_KEY(), JSON.stringify({ entries: keep(client.myEntries), wins: keep(client.wins),
      team: client.myTeam }));
  } catch { /* storage full or disabled */ }
}

/** Read my wallet (GET /api/me/coupons) soon, coalesced. */
function refreshCouponsSoon(delay = 200) {
  if (!client || !identity) return;
  clearTimeout(couponsTimer);
  couponsTimer = setTimeout(async () => {
    try { await client.myCoupons(); } catch { /* kept; read again on the next occasion */ }
    render();
  }, delay);
}

/** After a join: my wallet, and which open polls I voted in before (a reload). */
function afterJoinExtras() {
  if (!identity) return;
  refreshCouponsSoon(0);
  for (const p of client.polls.values()) {
    if (client.pollPhase(p) !== "open" || client.myVotes.has(p.poll_id) || pollsAsked.has(p.poll_id)) continue;
    pollsAsked.add(p.poll_id);
    client.pollResult(p.poll_id).then(render, () => pollsAsked.delete(p.poll_id));
  }
}

function resetExtras() {
  couponChoice.clear();
  pollsAsked = new Set();
  teamNote = null;
  loadExtras();
}

// -- fan teams ---------------------------------------------------------------------------------

async function onTeamTap(teamId) {
  if (!client || teamBusy) return;
  if (!identity) { toast("Joining a team needs signing in: open this live from the shop's site, signed in.", "error"); return; }
  if (isOffline()) { toast(OFFLINE_TAP, "error"); return; }
  if (client.myTeam === teamId) return;
  teamBusy = true;
  teamNote = null;
  render();
  try {
    await client.joinTeam(teamId);
    toast(`Welcome to team ${teamLabel(teamId)}!`, "ok");
  } catch (err) {
    const at = Number((String(err.message || "").match(/(\d{12,})/) || [])[1]) || null;
    const text = {
      TEAM_COOLDOWN: "You switched teams a moment ago",
      TEAM_LOCKED: "Switching teams is off in this live: you stay with your team.",
      NOT_FOUND: "That team is not in this live any more.",
      RATE_LIMITED: "Too fast: try again in a moment.",
    }[err.code] || `Could not join the team: ${err.message}`;
    // a cooldown is shown with its countdown until it ends; another refusal for a few seconds
    teamNote = { code: err.code, text, kind: "error", until: err.code === "TEAM_COOLDOWN" ? at : null,
      shownUntil: err.code === "TEAM_COOLDOWN" ? Infinity : Date.now() + TEAM_NOTE_MS };
    if (err.code === "TEAM_COOLDOWN" && at) client.teamSwitchAt = at;
  } finally {
    teamBusy = false;
    render();
  }
}

function teamStats(row, currencyHint) {
  if (!row) return "";
  const cur = Object.keys(row.gmv || {})[0] || currencyHint;
  const gmv = cur ? row.gmv?.[cur] || 0 : 0;
  const fans = `${row.members} ${row.members === 1 ? "fan" : "fans"}`;
  return gmv ? `${fans} · ${formatMoney(gmv, cur)}` : `${fans} · ${compact(row.likes || 0)} ♥`;
}

function renderTeams(now) {
  const bar = byId("team-bar");
  const teams = client.teams?.teams || [];
  show(bar, teams.length > 0);
  if (!teams.length) return false;
  const key = JSON.stringify(teams.map((t) => [t.team_id, t.name, t.colour, t.badge]));
  const picker = byId("team-picker");
  if (key !== teamKey) {
    teamKey = key;
    teamEls.clear();
    picker.replaceChildren(...teams.map((t) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "team-option";
      button.dataset.testid = `team-option-${t.team_id}`;
      button.dataset.teamId = t.team_id;
      button.setAttribute("role", "radio");
      button.style.setProperty("--team", t.colour);
      const badge = document.createElement("span");
      badge.className = "team-badge";
      badge.textContent = t.badge;
      badge.setAttribute("aria-hidden", "true");
      const info = document.createElement("span");
      info.className = "team-info";
      const name = document.createElement("span");
      name.className = "team-name";
      name.textContent = t.name;
      const stats = document.createElement("span");
      stats.className = "team-stats";
      stats.dataset.testid = "team-stats";
      info.append(name, stats);
      const rank = document.createElement("span");
      rank.className = "team-rank";
      rank.dataset.testid = "team-rank";
      button.append(badge, info, rank);
      teamEls.set(t.team_id, { button, stats, rank, name: t.name, badge: t.badge });
      return button;
    }));
  }
  // The leaderboard (ticks): ranks in the server's order (GMV of the room's first currency, then likes).
  const rows = new Map(client.leaderboard.map((r, i) => [r.team_id, { ...r, rank: i + 1 }]));
  const currency = client.salesList()[0]?.currency || "EUR";
  const mine = client.myTeam && client.teamOf(client.myTeam) ? client.myTeam : null;
  for (const t of teams) {
    const e = teamEls.get(t.team_id);
    const row = rows.get(t.team_id);
    const isMine = t.team_id === mine;
    setAttr(e.button, "aria-checked", isMine ? "true" : "false");
    setAttr(e.button, "data-mine", isMine ? "true" : null);
    setAttr(e.button, "data-rank", row?.rank ?? null);
    setAttr(e.button, "data-members", row?.members ?? null);
    setText(e.rank, row ? `#${row.rank}` : "");
    setText(e.stats, teamStats(row, currency));
    setAttr(e.button, "aria-label", `${t.name}${row ? `, rank ${row.rank}, ${teamStats(row, currency)}` : ""}${isMine ? ", your team" : ""}`);
    e.button.disabled = teamBusy;
  }
  setText(byId("my-team"), mine ? `You: ${teamLabel(mine)}` : identity ? "Pick your team" : "");
  setAttr(byId("team-bar"), "data-mine", mine ? "true" : null);
  const note = byId("team-note");
  let text = "";
  let kind = "";
  if (teamNote && (!teamNote.until || teamNote.until > now) && teamNote.shownUntil > Date.now()) {
    text = teamNote.until ? `${teamNote.text}: you can switch again in ${fmtClock(teamNote.until - now)}.` : teamNote.text;
    kind = teamNote.kind;
  } else if (mine && client.teams.allow_switch === false) {
    text = "Teams are final in this live.";
  } else if (mine && client.teamSwitchAt && client.teamSwitchAt > now) {
    text = `Switch possible in ${fmtClock(client.teamSwitchAt - now)}`;
  }
  setText(note, text);
  setAttr(note, "data-kind", kind || null);
  setAttr(note, "data-code", kind ? teamNote.code : null);
  return true;
}

// -- the cards ---------------------------------------------------------------------------------

/** The cards to show, live ones first (newest first), then finished ones (newest first). */
function extraItems(now) {
  const items = [];
  for (const p of client.polls.values()) {
    const phase = client.pollPhase(p, now);
    const end = p.closed_at ?? p.ends_at ?? now;
    if (phase === "closed" && end < now - POLL_SHOWN_MS) continue;
    items.push({ key: `poll:${p.poll_id}`, kind: "poll", obj: p, phase, live: phase === "open", at: p.opened_at ?? 0 });
  }
  for (const d of client.drops.values()) {
    if (d.drop_id.endsWith("-prize") && client.draws.has(d.drop_id.slice(0, -6))) continue;  // a draw's coupon prize
    const phase = client.dropPhase(d, now);
    const live = phase === "open" || phase === "scheduled";
    const end = d.ended_at ?? d.claim_until ?? now;
    const mineRecent = (client.myClaims.get(d.drop_id)?.at ?? 0) > Date.now() - DROP_SHOWN_MS;
    if (!live && end < now - DROP_SHOWN_MS && !mineRecent) continue;
    items.push({ key: `drop:${d.drop_id}`, kind: "drop", obj: d, phase, live, at: d.starts_at ?? 0 });
  }
  for (const w of client.draws.values()) {
    const phase = client.drawPhase(w, now);
    const win = client.wins.get(w.draw_id);
    const holdId = win ? prizeHold(win) : null;
    const prizeDue = !!holdId && client.holds.get(holdId)?.status !== "confirmed" && (!win.pay_by || win.pay_by > now);
    if (phase === "drawn" && (w.entry_until ?? now) < now - DRAW_SHOWN_MS && !prizeDue) continue;
    items.push({ key: `draw:${w.draw_id}`, kind: "draw", obj: w, phase, live: phase !== "drawn" || prizeDue, at: w.opened_at ?? 0 });
  }
  return items.filter((i) => !dismissed.has(i.key))
    .sort((a, b) => (a.live === b.live ? 0 : a.live ? -1 : 1) || b.at - a.at || a.key.localeCompare(b.key));
}

function part(tag, cls, testid, text) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (testid) el.dataset.testid = testid;
  if (text) el.textContent = text;
  return el;
}

function cardShell(item, kicker) {
  const root = part("article", `extra-card ${item.kind}-card`, `${item.kind}-card-${item.obj[`${item.kind}_id`]}`);
  root.dataset.kind = item.kind;
  root.dataset.id = item.obj[`${item.kind}_id`];
  const head = part("header", "extra-head");
  const kick = part("span", "extra-kicker", null, kicker);
  const timer = part("span", "extra-timer", `${item.kind}-timer`);
  const close = part("button", "extra-close", `${item.kind}-dismiss`);
  close.type = "button";
  close.setAttribute("aria-label", "Close");
  close.innerHTML = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M6.4 5L12 10.6 17.6 5 19 6.4 13.4 12l5.6 5.6-1.4 1.4L12 13.4 6.4 19 5 17.6 10.6 12 5 6.4z"/></svg>';
  close.dataset.action = "dismiss";
  head.append(kick, timer, close);
  root.append(head);
  return { root, head, kick, timer, close };
}

function buildPollCard(item) {
  const c = cardShell(item, "Poll");
  c.root.setAttribute("aria-label", "Poll");
  c.question = part("div", "poll-question", "poll-question");
  c.options = part("div", "poll-options");
  c.options.setAttribute("role", "group");
  c.optionEls = (item.obj.options || []).map((label, i) => {
    const b = part("button", "poll-option", `poll-option-${i}`);
    b.type = "button";
    b.dataset.action = "vote";
    b.dataset.option = String(i);
    const fill = part("span", "poll-fill", "poll-bar");
    fill.setAttribute("aria-hidden", "true");
    const text = part("span", "poll-label", null, label);
    const pct = part("span", "poll-pct", "poll-pct");
    b.append(fill, text, pct);
    c.options.append(b);
    return { b, fill, pct, label };
  });
  c.foot = part("div", "extra-status", "poll-status");
  c.foot.setAttribute("aria-live", "polite");
  c.root.append(c.question, c.options, c.foot);
  return c;
}

function updatePollCard(c, item, now) {
  const p = item.obj;
  const closed = item.phase === "closed";
  setAttr(c.root, "data-state", item.phase);
  setText(c.question, p.question);
  setAttr(c.options, "aria-label", p.question);
  setText(c.timer, closed ? "Final result" : p.ends_at ? `Ends in ${fmtClock(p.ends_at - now)}` : "Open");
  const counts = Array.isArray(p.counts) ? p.counts : [];
  const total = typeof p.total === "number" ? p.total : counts.reduce((a, n) => a + (n || 0), 0);
  const mine = client.myVotes.get(p.poll_id);
  const winners = closed ? (Array.isArray(p.winners) ? p.winners : topOf(counts)) : [];
  setAttr(c.root, "data-voted", mine === undefined ? null : String(mine));
  c.optionEls.forEach((o, i) => {
    const n = counts[i] || 0;
    const pct = total ? Math.round((n / total) * 100) : 0;
    o.fill.style.width = `${total ? (n / total) * 100 : 0}%`;
    // the bars and numbers show once I voted or the poll closed (no herding before my vote)
    const reveal = mine !== undefined || closed || !identity;
    setText(o.pct, reveal ? `${pct}%` : "");
    setAttr(o.b, "data-count", n);
    setAttr(o.b, "data-reveal", reveal ? "true" : null);
    setAttr(o.b, "aria-pressed", mine === i ? "true" : "false");
    setAttr(o.b, "data-mine", mine === i ? "true" : null);
    setAttr(o.b, "data-winner", winners.includes(i) ? "true" : null);
    setAttr(o.b, "aria-label", `${o.label}${reveal ? `: ${n} ${n === 1 ? "vote" : "votes"}, ${pct}%` : ""}${mine === i ? ", your vote" : ""}`);
    o.b.disabled = closed || mine !== undefined || voting.has(p.poll_id);
  });
  let status = `${total} ${total === 1 ? "vote" : "votes"}`;
  if (closed && winners.length) status += ` · ${winners.length > 1 ? "tie: " : "winner: "}${winners.map((i) => p.options?.[i]).join(" & ")}`;
  if (mine !== undefined) status += ` · you voted ${p.options?.[mine] ?? mine + 1}`;
  else if (!closed && !identity) status += " · sign in to vote";
  else if (!closed) status += " · tap to vote";
  setText(c.foot, status);
  setAttr(c.foot, "data-total", total);
}

function topOf(counts) {
  const max = Math.max(0, ...counts.map((n) => n || 0));
  return max > 0 ? counts.map((n, i) => (n === max ? i : -1)).filter((i) => i >= 0) : [];
}

function buildDropCard(item) {
  const c = cardShell(item, "Coupons");
  c.root.setAttribute("aria-label", "Coupon drop");
  c.value = part("div", "drop-value", "drop-value");
  c.terms = part("div", "drop-terms", "drop-terms");
  c.meter = part("div", "drop-meter");
  c.left = part("span", "drop-left", "drop-left");
  const bar = part("div", "stock-bar");
  c.fill = part("div", "stock-fill");
  bar.append(c.fill);
  c.meter.append(c.left, bar);
  c.claim = part("button", "drop-claim", "drop-claim");
  c.claim.type = "button";
  c.claim.dataset.action = "claim";
  c.status = part("div", "extra-status", "drop-result");
  c.status.setAttribute("aria-live", "polite");
  c.root.append(c.value, c.terms, c.meter, c.claim, c.status);
  return c;
}

function updateDropCard(c, item, now) {
  const d = item.obj;
  const phase = item.phase;
  const claim = client.myClaims.get(d.drop_id);
  const coupon = client.coupons.get(d.drop_id);
  const held = !!coupon || claim?.code === "CLAIMED" || claim?.code === "ALREADY_CLAIMED";
  setAttr(c.root, "data-state", phase);
  setAttr(c.root, "data-claim", claim?.code ?? null);
  setAttr(c.root, "data-team", d.team ?? null);
  if (d.team) setText(c.kick, `Coupons · team ${teamLabel(d.team)}`);
  setText(c.value, couponValue(d));
  setText(c.terms, `${couponTerms(d)}${d.valid_s || d.expires_at ? ` · use by ${new Date((d.expires_at ?? 0) - client.offset).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}` : ""}`);
  let timer = "";
  if (phase === "scheduled") timer = `Starts in ${fmtClock(d.starts_at - now)}`;
  else if (phase === "open") timer = d.claim_until ? `Ends in ${fmtClock(d.claim_until - now)}` : "Open";
  else timer = phase === "claimed_out" ? "All claimed" : "Ended";
  setText(c.timer, timer);
  const count = d.count || 0;
  const left = typeof d.left === "number" ? d.left : Math.max(0, count - (d.claimed || 0));
  setText(c.left, `${left} of ${count} left`);
  setAttr(c.left, "data-left", left);
  c.fill.style.width = `${count ? Math.max(0, Math.min(100, (left / count) * 100)) : 0}%`;
  const busy = claiming.has(d.drop_id);
  let label = "Claim";
  let state = "claim";
  if (held) { label = coupon?.state === "redeemed" ? "Used ✓" : "In your wallet ✓"; state = "held"; }
  else if (busy) { label = "Claiming…"; state = "pending"; }
  else if (phase === "scheduled") { label = `Claim in ${fmtClock(d.starts_at - now)}`; state = "scheduled"; }
  else if (phase === "claimed_out") { label = "All claimed"; state = "gone"; }
  else if (phase === "ended") { label = "Ended"; state = "gone"; }
  else if (claim?.code === "TEAM_ONLY") { label = `Team ${teamLabel(d.team)} only`; state = "team"; }
  else if (!identity) { label = "Sign in to claim"; state = "signin"; }
  setText(c.claim, label);
  setAttr(c.claim, "data-state", state);
  c.claim.disabled = state !== "claim" && state !== "held";  // "held": opens the wallet
  setAttr(c.claim, "aria-label", state === "held" ? "In your wallet: open it" : `${label}: ${couponValue(d)}`);
  let text = claim ? CLAIM_TEXT[claim.code] || claim.code : "";
  if (claim?.code === "TEAM_ONLY" && d.team) text = `This drop is for team ${teamLabel(d.team)} fans only.`;
  if (claim?.code === "NOT_STARTED" && phase === "scheduled") text = `Not open yet: it opens in ${fmtClock(d.starts_at - now)}.`;
  if (claim?.code === "NOT_STARTED" && phase !== "scheduled") text = "";  // it has opened since: tap again
  if (!claim && held) text = CLAIM_TEXT.ALREADY_CLAIMED;
  if (!claim && !held && d.team && client.myTeam !== d.team && phase !== "ended") text = `For team ${teamLabel(d.team)} fans.`;
  setText(c.status, text);
  setAttr(c.status, "data-kind", claim && !held && claim.code !== "NOT_STARTED" ? "error" : held ? "ok" : null);
}

function prizeHold(win) {
  if (!win?.hold) return null;
  return typeof win.hold === "object" ? win.hold.hold_id ?? win.hold.hold : win.hold;
}

/** The prize in words: a coupon's value, or the units of a product (its title when the draw names it). */
function prizeText(w) {
  const pz = w.prize || {};
  if (pz.coupon) return `a ${couponValue(pz.coupon)} coupon`;
  const units = pz.units || 1;
  const what = pz.title || client.products.find((p) => p.sku && pz.sku === p.sku)?.title;
  return what ? `${units > 1 ? `${units} × ` : ""}${what}` : `${units} ${units === 1 ? "unit" : "units"}${w.winners > 1 ? " each" : ""}`;
}

function ruleText(w) {
  const r = w.rule || {};
  const parts = [];
  if (r.keyword) parts.push(`comment “${r.keyword}”`);
  if (r.team) parts.push(`team ${teamLabel(r.team)} fans`);
  if (r.watched_s) parts.push(`watched ${fmtSpan(r.watched_s * 1000)}`);
  if (r.bought) parts.push("bought in this live");
  parts.push("be here at the draw");
  return parts.join(" · ");
}

function buildDrawCard(item) {
  const c = cardShell(item, "Lucky draw");
  c.root.setAttribute("aria-label", "Lucky draw");
  c.title = part("div", "draw-title", "draw-title");
  c.prize = part("div", "draw-prize", "draw-prize");
  c.rule = part("div", "draw-rule", "draw-rule");
  c.count = part("div", "draw-count", "draw-entrants");
  c.enter = part("button", "draw-enter", "draw-enter");
  c.enter.type = "button";
  c.enter.dataset.action = "enter";
  c.result = part("div", "draw-result", "draw-result");
  c.winners = part("ol", "draw-winners", "draw-winners");
  c.result.append(part("span", "draw-result-label", null, "Winners"), c.winners);
  c.won = part("div", "draw-won", "draw-won");
  c.wonText = part("span", "draw-won-text", "draw-won-text");
  c.pay = part("button", "draw-pay", "draw-pay");
  c.pay.type = "button";
  c.pay.dataset.action = "pay-prize";
  c.won.append(c.wonText, c.pay);
  c.status = part("div", "extra-status", "draw-status");
  c.status.setAttribute("aria-live", "polite");
  const proof = part("div", "draw-proof");
  c.commit = part("span", "draw-commit", "draw-commitment");
  c.verify = part("a", "draw-link", "draw-verify", "Verify");
  c.verify.target = "_blank";
  c.verify.rel = "noopener";
  c.list = part("a", "draw-link", "draw-entrants-link", "Entrants");
  c.list.target = "_blank";
  c.list.rel = "noopener";
  proof.append(c.commit, c.verify, c.list);
  c.root.append(c.title, c.prize, c.rule, c.count, c.enter, c.result, c.won, c.status, proof);
  return c;
}

function updateDrawCard(c, item, now) {
  const w = item.obj;
  const phase = item.phase;
  const entry = client.myEntries.get(w.draw_id);
  const win = client.wins.get(w.draw_id);
  const entered = entry?.code === "ENTERED" || entry?.code === "ALREADY_ENTERED" || !!win;
  setAttr(c.root, "data-state", phase);
  setAttr(c.root, "data-entry", entry?.code ?? null);
  setAttr(c.root, "data-won", win ? "true" : null);
  setText(c.title, w.title);
  setText(c.prize, `Prize: ${prizeText(w)} · ${w.winners} ${w.winners === 1 ? "winner" : "winners"}`);
  setText(c.rule, `To enter: ${ruleText(w)}`);
  setText(c.timer, phase === "open" ? `Entries close in ${fmtClock(w.entry_until - now)}` : phase === "closing" ? "Drawing…" : "Drawn");
  const n = typeof w.entrants === "number" ? w.entrants : null;
  setText(c.count, n === null ? "" : `${n} ${n === 1 ? "entry" : "entries"}`);
  setAttr(c.count, "data-count", n);
  // Enter (or, with a keyword, post the keyword as a comment: that enters)
  const kw = w.rule?.keyword;
  const busy = entering.has(w.draw_id);
  show(c.enter, phase === "open");
  let label = kw ? `Comment “${kw}” to enter` : "Enter the draw";
  let state = "enter";
  if (entered) { label = "You're in ✓"; state = "entered"; }
  else if (busy) { label = "Entering…"; state = "pending"; }
  else if (!identity) { label = "Sign in to enter"; state = "signin"; }
  setText(c.enter, label);
  setAttr(c.enter, "data-state", state);
  c.enter.disabled = state !== "enter";
  // the result: the winners' masked ids, mine marked
  const drawn = phase === "drawn";
  show(c.result, drawn);
  const ids = drawn ? (w.winner_ids || []) : [];
  const key = ids.join("|") + `#${entry?.entry_id || ""}`;
  if (c.winners.dataset.key !== key) {
    c.winners.dataset.key = key;
    c.winners.replaceChildren(...ids.map((id) => {
      const li = part("li", "draw-winner", "draw-winner", id);
      if (entry?.entry_id && id === entry.entry_id) { li.dataset.mine = "true"; li.title = "you"; }
      return li;
    }));
  }
  setAttr(c.winners, "aria-label", drawn ? `Winners: ${ids.join(", ")}` : null);
  // I won: a pool prize is a hold at price 0 to pay before pay_by; a coupon prize is in the wallet
  const holdId = win ? prizeHold(win) : null;
  const hold = holdId ? client.holds.get(holdId) : null;
  const paid = hold?.status === "confirmed" || win?.paid;
  show(c.won, !!win);
  if (win) {
    const due = win.pay_by ? win.pay_by - now : null;
    if (holdId) {
      setText(c.wonText, paid ? "You won: your prize is claimed ✓" : due !== null && due <= 0
        ? "You won, but the prize was not claimed in time."
        : `You won! Claim your prize${due !== null ? ` within ${fmtClock(due)}` : ""}.`);
      show(c.pay, !paid && (due === null || due > 0));
      const payingNow = paying.has(holdId);
      setText(c.pay, payingNow ? "Claiming…" : `Claim · Pay ${formatMoney(0, client.salesList()[0]?.currency || "EUR")}`);
      c.pay.disabled = payingNow;
      setAttr(c.pay, "data-hold", holdId);
    } else {
      setText(c.wonText, `You won ${prizeText(w)}: it is in your wallet.`);  // "a €10.00 off coupon"
      show(c.pay, false);
    }
  }
  let status = "";
  let kind = null;
  if (entry && !win) {
    status = entry.code === "NOT_ELIGIBLE" && entry.message ? `Not eligible: ${entry.message}` : ENTRY_TEXT[entry.code] || entry.code;
    if (entry.entry_id && (entry.code === "ENTERED" || entry.code === "ALREADY_ENTERED")) status += ` Your entry: ${entry.entry_id}.`;
    kind = entry.code === "ENTERED" || entry.code === "ALREADY_ENTERED" ? "ok" : "error";
    if (drawn && entered) { status = entry.entry_id && ids.includes(entry.entry_id) ? "You won!" : `Not this time. Your entry: ${entry.entry_id || "—"}.`; kind = null; }
  }
  setText(c.status, status);
  setAttr(c.status, "data-kind", kind);
  const commit = String(w.commitment || "");
  setText(c.commit, commit ? `Commitment ${commit.slice(0, 10)}…` : "");
  setAttr(c.commit, "title", commit ? `SHA-256 of the secret seed, published before the entries: ${commit}` : null);
  show(c.verify, drawn);
  show(c.list, drawn);
  setAttr(c.verify, "href", `/verify/${encodeURIComponent(w.draw_id)}`);
  setAttr(c.list, "href", `/api/draws/${encodeURIComponent(w.draw_id)}/entrants`);
}

const CARD = {
  poll: [buildPollCard, updatePollCard],
  drop: [buildDropCard, updateDropCard],
  draw: [buildDrawCard, updateDrawCard],
};

function renderExtras() {
  const now = client.serverNow();
  const teams = renderTeams(now);
  const items = extraItems(now);
  const box = byId("extra-cards");
  const keys = new Set(items.map((i) => i.key));
  for (const [k, c] of extraEls) if (!keys.has(k)) { c.root.remove(); extraEls.delete(k); }
  for (const item of items) {
    let c = extraEls.get(item.key);
    const [build, update] = CARD[item.kind];
    if (!c) { c = build(item); extraEls.set(item.key, c); }
    update(c, item, now);
  }
  const order = items.map((i) => i.key).join("|");
  if (order !== extrasOrder) {
    extrasOrder = order;
    for (const item of items) box.appendChild(extraEls.get(item.key).root);
  }
  setAttr(box, "data-count", items.length);
  show(box, items.length > 0);
  const on = teams || items.length > 0;
  show(byId("extras"), on);
  document.body.classList.toggle("has-extras", on);
}

function onExtrasClick(ev) {
  const team = ev.target.closest(".team-option");
  if (team) { if (!team.disabled) onTeamTap(team.dataset.teamId); return; }
  const btn = ev.target.closest("button[data-action]");
  const card = ev.target.closest(".extra-card");
  if (!btn || !card || btn.disabled) return;
  const id = card.dataset.id;
  const action = btn.dataset.action;
  if (action === "dismiss") { dismissed.add(`${card.dataset.kind}:${id}`); render(); return; }
  if (action === "vote") onVote(id, Number(btn.dataset.option));
  else if (action === "claim") onClaim(id);
  else if (action === "enter") onEnter(id);
  else if (action === "pay-prize") onPayPrize(id);
}

async function onVote(pollId, option) {
  if (!identity) { toast("Voting needs signing in: open this live from the shop's site, signed in.", "error"); return; }
  if (isOffline()) { toast(OFFLINE_TAP, "error"); return; }
  if (voting.has(pollId)) return;
  voting.add(pollId);
  render();
  try {
    const res = await client.vote(pollId, option);
    const text = { ALREADY_VOTED: "You voted in this poll already.", CLOSED: "This poll has closed.",
      NOT_FOUND: "This poll is no longer open.", INVALID: "That option is not in the poll.",
      RATE_LIMITED: "Too fast: try again in a moment." }[res.code];
    if (text) toast(text, res.code === "ALREADY_VOTED" ? "info" : "error");
  } catch (err) {
    toast(err.code === "TIMEOUT" ? "No answer from the server, try again." : `Could not vote: ${err.message}`, "error");
  } finally {
    voting.delete(pollId);
    render();
  }
}

async function onClaim(dropId) {
  if (client.coupons.has(dropId) || ["CLAIMED", "ALREADY_CLAIMED"].includes(client.myClaims.get(dropId)?.code)) {
    setOrdersOpen(true);  // it is mine: show the wallet
    return;
  }
  if (!identity) { toast("Claiming needs signing in: open this live from the shop's site, signed in.", "error"); return; }
  if (isOffline()) { toast(OFFLINE_TAP, "error"); return; }
  if (claiming.has(dropId)) return;
  claiming.add(dropId);
  render();
  try {
    const res = await client.claimCoupon(dropId);
    if (res.code === "CLAIMED") toast(`${couponValue(res.coupon || client.drops.get(dropId))} coupon claimed: it is in your wallet.`, "ok");
    if (res.code === "CLAIMED" || res.code === "ALREADY_CLAIMED") refreshCouponsSoon(100);
  } catch (err) {
    toast(err.code === "TIMEOUT" ? "No answer from the server, try again." : `Could not claim: ${err.message}`, "error");
  } finally {
    claiming.delete(dropId);
    render();
  }
}

async function onEnter(drawId) {
  if (!identity) { toast("Entering needs signing in: open this live from the shop's site, signed in.", "error"); return; }
  if (isOffline()) { toast(OFFLINE_TAP, "error"); return; }
  const w = client.draws.get(drawId);
  if (!w || entering.has(drawId)) return;
  entering.add(drawId);
  render();
  try {
    // A keyword draw is entered by a comment that contains the keyword: post it, then ask for the entry.
    if (w.rule?.keyword) {
      client.comment(w.rule.keyword);
      chatStick = true;
      await new Promise((r) => setTimeout(r, 600));
    }
    await client.enterDraw(drawId);
    saveExtras();
  } catch (err) {
    toast(err.code === "TIMEOUT" ? "No answer from the server, try again." : `Could not enter: ${err.message}`, "error");
  } finally {
    entering.delete(drawId);
    render();
  }
}

/** A pool prize: the hold at price 0 that the win made, paid like any reservation (no provider:
 *  the amount is 0). */
async function onPayPrize(drawId) {
  const win = client.wins.get(drawId);
  const holdId = win ? prizeHold(win) : null;
  if (!holdId) return;
  const h = client.holds.get(holdId) || { hold: holdId, sale: null, qty: 1, pay_by: win.pay_by, status: "held", prize: true };
  if (!client.holds.has(holdId)) client.holds.set(holdId, h);
  await payHold(h);
}

// -- the wallet and the coupon picker ------------------------------------------------------------

/** The coupon a payment of this hold uses: the viewer's pick, else the largest discount ({coupon, quote}). */
function chosenCoupon(hold) {
  if (!client || !hold || hold.prize) return null;
  const options = client.couponsFor(hold);
  const pick = couponChoice.get(hold.hold);
  if (pick === "") return null;
  return options.find((o) => o.coupon.drop_id === pick) || options[0] || null;
}

let pickerKey = "";
function renderCouponPicker(bs) {
  const box = byId("coupon-picker");
  const hold = bs.state === "reserved" ? bs.hold : null;
  const options = hold ? client.couponsFor(hold) : [];
  show(box, options.length > 0);
  if (!options.length) return null;
  const select = byId("coupon-select");
  const key = hold.hold + "|" + options.map((o) => `${o.coupon.drop_id}:${o.quote.discount}`).join(",");
  if (key !== pickerKey) {
    pickerKey = key;
    const none = new Option("No coupon", "");
    select.replaceChildren(none, ...options.map((o) => new Option(o.coupon.kind === "percent"
      ? `${couponValue(o.coupon)} (−${formatMoney(o.quote.discount, o.quote.currency)})` : couponValue(o.coupon), o.coupon.drop_id)));
  }
  const chosen = chosenCoupon(hold);
  const value = chosen ? chosen.coupon.drop_id : "";
  if (select.value !== value) select.value = value;
  select.dataset.hold = hold.hold;
  select.disabled = paying.has(hold.hold);
  const summary = byId("pay-summary");
  if (chosen) {
    const q = chosen.quote;
    setText(summary, `${formatMoney(q.listTotal, q.currency)} − ${formatMoney(q.discount, q.currency)} = ${formatMoney(q.total, q.currency)}`);
  } else {
    setText(summary, `${options.length} ${options.length === 1 ? "coupon applies" : "coupons apply"}`);
  }
  setAttr(summary, "data-discount", chosen ? chosen.quote.discount : 0);
  setAttr(summary, "data-total", chosen ? chosen.quote.total : null);
  return chosen;
}

const TICKET_ICON = '<svg viewBox="0 0 24 24"><path d="M3 6h18v4a2 2 0 000 4v4H3v-4a2 2 0 000-4V6zm6 2v2h2V8H9zm0 4v2h2v-2H9zm0 4v2h2v-2H9z"/></svg>';
const WALLET_LABEL = { claimed: "Ready", applying: "In use", redeemed: "Used", expired: "Expired" };
const walletRows = new Map();
let walletOrder = "";

function renderWallet(now) {
  const list = byId("wallet-list");
  const coupons = identity ? Array.from(client.coupons.values()) : [];
  const rank = (c) => (c.state === "claimed" && !(c.expires_at && c.expires_at <= now) ? 0 : 1);
  coupons.sort((a, b) => rank(a) - rank(b) || (b.claimed_at ?? 0) - (a.claimed_at ?? 0));
  show(byId("wallet-heading"), coupons.length > 0);
  const keys = coupons.map((c) => c.drop_id);
  for (const [k, row] of walletRows) if (!keys.includes(k)) { row.li.remove(); walletRows.delete(k); }
  for (const c of coupons) {
    let row = walletRows.get(c.drop_id);
    if (!row) {
      row = { li: part("li", "my-row wallet-row", `wallet-coupon-${c.drop_id}`) };
      row.li.dataset.kind = "coupon";
      row.icon = part("span", "wallet-icon");
      row.icon.setAttribute("aria-hidden", "true");
      row.icon.innerHTML = TICKET_ICON;
      const info = part("span", "my-info");
      row.title = part("span", "my-title", "wallet-value");
      const meta = part("span", "my-meta");
      row.badge = part("span", "my-badge", "wallet-state");
      row.when = part("span", "my-when", "wallet-when");
      meta.append(row.badge, row.when);
      row.terms = part("span", "my-ref wallet-terms", "wallet-terms");
      info.append(row.title, meta, row.terms);
      row.li.append(row.icon, info);
      walletRows.set(c.drop_id, row);
    }
    const expired = c.state === "expired" || (c.state === "claimed" && c.expires_at && c.expires_at <= now);
    const state = expired ? "expired" : c.state;
    setAttr(row.li, "data-status", state);
    setAttr(row.badge, "data-status", state);
    setText(row.badge, WALLET_LABEL[state] || state);
    setText(row.title, couponValue(c));
    setText(row.terms, couponTerms(c));
    let when = "";
    if (state === "claimed") when = c.expires_at ? `use within ${fmtClock(c.expires_at - now)}` : "use it when you pay";
    else if (state === "redeemed") when = c.order_id ? `on order ${shortId(c.order_id)}` : "used";
    else if (state === "applying") when = "being paid";
    setText(row.when, when);
  }
  const order = keys.join("|");
  if (order !== walletOrder) { walletOrder = order; for (const k of keys) list.appendChild(walletRows.get(k).li); }
  return coupons.length;
}

// ---------------------------------------------------------------------------------------------
// Share & earn (docs/CLIENT.md, "Share & earn"; docs/PROTOCOL.md Share-to-earn).
// - Every join carries `device` (this browser's id, made once: localStorage `ls-device`; anonymous
//   watchers are counted in show reports by it) and, when the page was opened through a share link
//   (`?ref=<code>`, kept in sessionStorage for this tab and room so a reload or a rejoin sends it too),
//   `ref`: a signed-in viewer who joins through it is attributed to the link's sharer (first touch).
// - `?product=<id>` (a product's link): that product's deal goes on the card (else the bag opens on
//   its row), marked `data-shared`.
// - Putting a deal on the card (a row of the bag, the "New deal" notice, a product link) sends
//   `view {product}`: an interest signal with no reply, at most once per product per 10 s.
// - Share (the top bar, the card, each row of the bag; signed-in viewers only) opens "Share & earn":
//   my link (POST /api/share-links; one per live / product, reused from GET /api/me/share-links) with
//   Copy and the system's share sheet; my earnings (GET /api/me/earnings: pending / confirmed /
//   reversed per currency and the latest commissions) and the payouts CSV (GET /api/payouts.csv,
//   fetched with the token and saved as a file); my mini-shops (GET /api/me/shops) and a form to open
//   one from the stock merchants opened to shopkeepers (GET /api/shop-pools, POST /api/shops).

const SLUG_RE = /^[A-Za-z0-9_-]{1,64}$/;
const DEVICE_KEY = "ls-device";
const REF_KEY = `livesale.ref.${roomId}`;
const VIEW_EVERY_MS = 10000;
const EARN_POLL_MS = 30000;
const EARN_ROWS = 50;
const SHARE_SIGNIN_TEXT = "Sharing needs signing in: open this live from the shop's site, signed in.";
const SHARE_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M18 16.1c-.8 0-1.5.3-2 .8L8.9 12.7c.1-.2.1-.5.1-.7s0-.5-.1-.7L16 7.2c.5.5 1.2.8 2 .8a3 3 0 10-3-3c0 .2 0 .5.1.7L8 9.8A3 3 0 003 12a3 3 0 005 2.2l7.1 4.2c-.1.2-.1.4-.1.6a2.9 2.9 0 102.9-2.9z"/></svg>';
const EARN_LABEL = { pending: "Pending", confirmed: "Confirmed", reversed: "Reversed" };

function randomHex(bytes) {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("");
}

let pageDevice = null;
/** This browser's id (16 hex characters, made once and kept in localStorage `ls-device`). */
function deviceId() {
  if (pageDevice) return pageDevice;
  try {
    const kept = localStorage.getItem(DEVICE_KEY);
    if (kept && /^[0-9a-f]{16}$/.test(kept)) { pageDevice = kept; return kept; }
    pageDevice = randomHex(8);
    localStorage.setItem(DEVICE_KEY, pageDevice);
  } catch {
    pageDevice = pageDevice || randomHex(8);  // storage disabled: an id for this page view
  }
  return pageDevice;
}

const pageQuery = new URLSearchParams(location.search);
/** The share code this tab arrived with in this room (?ref=, else kept from earlier in this tab). A
 *  malformed code is dropped: the server would refuse the whole join for it. */
const shareRef = (() => {
  const ref = pageQuery.get("ref");
  const ok = !!ref && SLUG_RE.test(ref);
  try {
    if (ok) { sessionStorage.setItem(REF_KEY, ref); return ref; }
    const kept = sessionStorage.getItem(REF_KEY);
    return kept && SLUG_RE.test(kept) ? kept : null;
  } catch {
    return ok ? ref : null;
  }
})();
const sharedProduct = (() => {
  const p = pageQuery.get("product");
  return p && SLUG_RE.test(p) ? p : null;
})();

/** What every join of the page carries (the first, a reconnect's, a re-join with another token):
 *  `device` and, when the page came through a share link, `ref` (livesale.js `joinFields`). */
function joinFields() {
  return { device: deviceId(), ...(shareRef ? { ref: shareRef } : {}) };
}

const viewedAt = new Map();  // product id -> Date.now() of its last `view`
function noteView(productId) {
  if (!client || !productId || !SLUG_RE.test(productId)) return;
  const now = Date.now();
  if (now - (viewedAt.get(productId) || 0) < VIEW_EVERY_MS) return;
  viewedAt.set(productId, now);
  client.send("view", { product: productId });
}

let sharedShown = false;
/** ?product=<id>: once the room is known, put that product's live deal on the card, else open the
 *  bag on its row. */
function showSharedProduct() {
  if (sharedShown || !sharedProduct || !client) return;
  const sales = client.salesList().filter((s) => s.product_id === sharedProduct);
  if (!sales.length && !client.products.some((p) => p.product_id === sharedProduct)) return;  // not in this live
  sharedShown = true;
  const now = client.serverNow();
  const live = sales.find((s) => client.salePhase(s, now) === "open") || sales.find((s) => client.salePhase(s, now) === "scheduled");
  if (live) {
    viewSale(live.sale_id);
  } else {
    noteView(sharedProduct);
    setBagOpen(true);
  }
  requestAnimationFrame(() => {
    const row = byId("bag-list")?.querySelector(`.bag-row[data-shared="true"]`);
    if (row && bagOpen) row.scrollIntoView({ block: "nearest" });
  });
}

const growthApi = apiWith(() => identity?.token || "");

function shareButton() {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "save-button share-button";
  b.hidden = true;
  b.innerHTML = `${SHARE_ICON}<span class="save-label" aria-hidden="true">Share</span>`;
  return b;
}

/** A product's Share (hidden without a viewer token): its test id, label; `li` (a row of the bag) is
 *  marked when it is the product the page was shared for. */
function renderShare(btn, productId, title, li = null) {
  if (li) setAttr(li, "data-shared", productId && productId === sharedProduct ? "true" : null);
  if (!btn) return;
  show(btn, !!identity && !!productId);
  if (!productId) return;
  if (btn.dataset.testid !== "card-share") setAttr(btn, "data-testid", `share-${productId}`);
  setAttr(btn, "data-product-id", productId);
  setAttr(btn, "aria-label", `Share ${title || "this product"} and earn`);
  setAttr(btn, "title", "Share a link: you earn a commission on what friends buy through it");
}

// -- the Share & earn panel

let earnOpen = false;
let earnTimer = null;
const share = { user: null, links: new Map(), pending: new Map(), mine: null, product: "", gen: 0 };
const earn = { user: null, data: null, shops: null, pools: null, error: null, loading: false, at: 0, gen: 0 };
let shopPoolsKey = "";

function resetGrowth() {
  Object.assign(share, { user: identity?.user ?? null, links: new Map(), pending: new Map(), mine: null, gen: share.gen + 1 });
  Object.assign(earn, { user: identity?.user ?? null, data: null, shops: null, pools: null, error: null, loading: false,
    at: 0, gen: earn.gen + 1 });
}

/** Called by render() (4 times a second): cheap. */
function renderGrowth() {
  show(byId("share-room-button"), !!identity);
  setAttr(byId("product-card"), "data-shared", sharedProduct && byId("featured-sale").dataset.productId === sharedProduct
    ? "true" : null);
  if ((identity?.user ?? null) !== share.user) {
    resetGrowth();
    if (earnOpen) { if (identity) { showShareLink(share.product); refreshEarn(); } else setEarnOpen(false); }
  }
}

function openEarn(productId = "") {
  if (!identity) { toast(SHARE_SIGNIN_TEXT, "error"); return; }
  setEarnOpen(true, productId || "");
}

function setEarnOpen(open, productId = "") {
  if (open && bagOpen) setBagOpen(false);        // one panel at a time
  if (open && ordersOpen) setOrdersOpen(false);
  earnOpen = open;
  show(byId("earn-sheet"), open);
  show(byId("earn-backdrop"), open);
  setAttr(byId("share-room-button"), "aria-expanded", open ? "true" : "false");
  clearInterval(earnTimer);
  earnTimer = null;
  if (!open) return;
  if ((identity?.user ?? null) !== share.user) resetGrowth();
  showShareLink(productId);
  refreshEarn();
  earnTimer = setInterval(() => { if (earnOpen && !earn.loading) refreshEarn(); }, EARN_POLL_MS);
}

/** My link for this live ("") or a product of it: one per user, live and product, created once. */
function linkFor(productId) {
  const key = productId || "";
  if (share.links.has(key)) return Promise.resolve(share.links.get(key));
  if (share.pending.has(key)) return share.pending.get(key);
  const gen = share.gen;
  const p = (async () => {
    if (!share.mine) {
      try { share.mine = (await growthApi("GET", "/api/me/share-links")).links || []; } catch { share.mine = []; }
      if (gen !== share.gen) throw Object.assign(new Error("signed in as someone else meanwhile"), { code: "STALE" });
      for (const l of share.mine) {  // newest first: the first of a live / product is kept
        const k = l.product_id || "";
        if (l.room_id === roomId && !share.links.has(k)) share.links.set(k, l);
      }
      if (share.links.has(key)) return share.links.get(key);
    }
    const link = await growthApi("POST", "/api/share-links", key ? { room_id: roomId, product_id: key } : { room_id: roomId });
    if (gen !== share.gen) throw Object.assign(new Error("signed in as someone else meanwhile"), { code: "STALE" });
    share.links.set(key, link);
    return link;
  })();
  share.pending.set(key, p);
  p.finally(() => { if (share.pending.get(key) === p) share.pending.delete(key); }).catch(() => {});
  return p;
}

function shareStatus(text, kind = "ok") {
  const st = byId("share-status");
  setText(st, text);
  setAttr(st, "data-kind", text ? kind : null);
}

async function showShareLink(productId) {
  share.product = productId || "";
  const product = productId ? client?.products.find((p) => p.product_id === productId) : null;
  setText(byId("share-heading"), productId ? `Share “${product?.title || productId}”` : "Share this live");
  const input = byId("share-url");
  const ask = `${share.gen}|${share.product}`;
  input.value = "";
  delete input.dataset.code;
  shareStatus("Creating your link…", "info");
  show(byId("share-native"), false);
  try {
    const link = await linkFor(share.product);
    if (`${share.gen}|${share.product}` !== ask) return;
    input.value = new URL(link.url, location.origin).href;
    input.dataset.code = link.code;
    shareStatus("");
    show(byId("share-native"), typeof navigator.share === "function");
  } catch (err) {
    if (err.code === "STALE" || `${share.gen}|${share.product}` !== ask) return;
    shareStatus(`Could not create your link: ${err.message}`, "error");
  }
}

/** Copy a link: the clipboard where the browser allows it, else the field is selected to copy by hand. */
async function copyLink(input, onText) {
  if (!input.value) return;
  try {
    if (!navigator.clipboard?.writeText) throw new Error("no clipboard");
    await navigator.clipboard.writeText(input.value);
    onText("Link copied ✓", "ok");
  } catch {
    input.focus();
    input.select();
    onText("Selected: copy it with your keyboard or menu.", "info");
  }
}

async function nativeShare() {
  const url = byId("share-url").value;
  if (!url || typeof navigator.share !== "function") return;
  const product = share.product ? client?.products.find((p) => p.product_id === share.product) : null;
  try {
    await navigator.share({ title: product?.title || client?.room?.title || "livesale", url });
  } catch (err) {
    if (err?.name !== "AbortError") shareStatus(`Could not share: ${err.message || err}`, "error");
  }
}

async function refreshEarn() {
  if (!identity) return;
  const gen = earn.gen;
  earn.loading = true;
  renderEarn();
  const [e, s, p] = await Promise.allSettled([growthApi("GET", "/api/me/earnings"), growthApi("GET", "/api/me/shops"),
    growthApi("GET", "/api/shop-pools")]);
  if (gen !== earn.gen) return;
  earn.loading = false;
  if (e.status === "fulfilled") earn.data = e.value;
  if (s.status === "fulfilled") earn.shops = s.value.shops || [];
  if (p.status === "fulfilled") earn.pools = p.value.pools || [];
  const failed = [e, s, p].find((r) => r.status === "rejected");
  earn.error = failed ? failed.reason.message || String(failed.reason) : null;
  if (failed?.reason?.status === 401) onClientError({ detail: { code: "UNAUTHORIZED" } });
  earn.at = Date.now();
  renderEarn();
}

function pct(bps) {
  return `${(Number(bps) / 100).toLocaleString(undefined, { maximumFractionDigits: 2 })}%`;
}

function earnTotal(cur, t) {
  const cell = (cls, label, value) => el("span", { class: `my-total-cell ${cls}`, "data-testid": cls },
    el("span", { class: "my-total-label" }, label), el("strong", {}, value));
  return el("div", { class: "earn-total", "data-testid": `earn-total-${cur}`, "data-pending": t.pending,
    "data-confirmed": t.confirmed, "data-reversed": t.reversed },
  el("span", { class: "my-total-head" }, `${cur} · ${t.orders} order${t.orders === 1 ? "" : "s"}`),
  cell("earn-pending", "Pending", formatMoney(t.pending, cur)),
  cell("earn-confirmed", "Confirmed", formatMoney(t.confirmed, cur)),
  cell("earn-reversed", "Reversed", formatMoney(t.reversed, cur)));
}

/** A commission's product: its title when it is a product of this live (or a pool of the shelf), else its SKU. */
function productTitle(c) {
  const p = c.room_id === roomId ? client?.products.find((x) => x.sku === c.sku) : null;
  return p?.title || (earn.pools || []).find((x) => x.sku === c.sku)?.title || c.sku;
}

function earnRow(c) {
  const shopId = String(c.channel || "").replace(/^shop:/, "");
  const shopTitle = (earn.shops || []).find((x) => x.shop_id === shopId)?.title;
  const where = c.source === "shop" ? `your shop ${shopTitle ? `“${shopTitle}”` : shopId}`
    : c.source === "link" ? `your link${c.room_id ? ` · ${c.room_id}` : ""}` : c.source;
  return el("li", { class: "my-row earn-row", "data-testid": `earn-row-${c.order_id}`, "data-status": c.status,
    "data-amount": c.amount },
  el("span", { class: "my-info" },
    el("span", { class: "my-title", "data-testid": "earn-row-title" }, `${productTitle(c)} · order ${shortId(c.order_id)}`),
    el("span", { class: "my-meta" },
      el("span", { class: "my-badge", "data-status": c.status, "data-testid": "earn-row-status" }, EARN_LABEL[c.status] || c.status),
      el("span", {}, `via ${where}`)),
    el("span", { class: "my-ref" }, `${pct(c.rate_bps)} of ${formatMoney(c.base, c.currency)} · ${new Date(c.settled_at).toLocaleString()}`)),
  el("span", { class: "my-right" }, el("span", { class: "my-amount", "data-testid": "earn-row-amount" }, formatMoney(c.amount, c.currency))));
}

function shopRow(shop) {
  const url = new URL(shop.url, location.origin).href;
  const input = el("input", { class: "share-url", type: "text", readonly: true, value: url, "aria-label": `Link of ${shop.title}`,
    "data-testid": "my-shop-url" });
  const status = el("span", { class: "earn-hint", "aria-live": "polite" });
  const n = (shop.products || []).length;
  return el("li", { class: "my-row shop-row", "data-testid": `my-shop-${shop.shop_id}`, "data-shop-id": shop.shop_id },
    el("span", { class: "my-info" },
      el("span", { class: "my-title", "data-testid": "my-shop-title" }, shop.title),
      el("span", { class: "my-meta" }, `${n} product${n === 1 ? "" : "s"} · `,
        el("a", { href: shop.url, target: "_blank", rel: "noopener", "data-testid": "my-shop-link" }, shop.url)),
      el("span", { class: "share-row" }, input,
        el("button", { class: "btn btn-small", type: "button", "data-testid": "my-shop-copy", "aria-label": `Copy the link of ${shop.title}`,
          onclick: () => copyLink(input, (t) => setText(status, t)) }, "Copy")),
      status));
}

function renderShopPools() {
  const pools = earn.pools || [];
  const key = JSON.stringify(pools.map((p) => [p.pool_id, p.title, p.unit_price, p.currency, p.commission_bps]));
  show(byId("shop-pools-empty"), earn.pools !== null && pools.length === 0);
  if (key === shopPoolsKey) return;
  shopPoolsKey = key;
  const box = byId("shop-pool-list");
  const checked = new Set(Array.from(box.querySelectorAll("input:checked"), (i) => i.value));
  box.replaceChildren(...pools.map((p) => el("label", { class: "shop-pool", "data-testid": `shop-pool-${p.pool_id}` },
    el("input", { type: "checkbox", name: "pools", value: p.pool_id, checked: checked.has(p.pool_id),
      "aria-label": `Sell ${p.title}` }),
    el("span", { class: "shop-pool-title" }, p.title),
    el("span", { class: "shop-pool-meta" }, `${formatMoney(p.unit_price, p.currency)} · you earn `,
      el("span", { class: "shop-pool-rate", "data-testid": "shop-pool-rate" }, pct(p.commission_bps))))));
}

function renderEarn() {
  const sheet = byId("earn-sheet");
  setAttr(sheet, "data-state", earn.loading ? "loading" : earn.error ? "error" : earn.data ? "ready" : "idle");
  setText(byId("earn-sync"), earn.loading ? "Updating…" : earn.at ? `updated ${new Date(earn.at).toLocaleTimeString()}` : "");
  const errEl = byId("earn-error");
  show(errEl, !!earn.error);
  setText(errEl, earn.error ? `Could not read everything: ${earn.error}` : "");
  const d = earn.data;
  const totals = Object.entries(d?.totals || {}).sort(([a], [b]) => a.localeCompare(b));
  byId("earn-totals").replaceChildren(...totals.map(([cur, t]) => earnTotal(cur, t)));
  const rows = (d?.commissions || []).slice(0, EARN_ROWS);
  byId("earn-list").replaceChildren(...rows.map(earnRow));
  show(byId("earn-empty"), !!d && rows.length === 0);
  setText(byId("earn-pending-note"), d ? `Pending for ${Math.round(d.pending_days)} days after each order (returns), then confirmed.` : "");
  const shops = earn.shops || [];
  byId("my-shops-list").replaceChildren(...shops.map(shopRow));
  show(byId("my-shops-empty"), earn.shops !== null && shops.length === 0);
  renderShopPools();
}

async function downloadPayouts() {
  if (!identity) return;
  const btn = byId("earn-payouts");
  btn.disabled = true;
  try {
    let res;
    try {
      res = await fetch("/api/payouts.csv", { headers: { Authorization: `Bearer ${identity.token}` } });
    } catch (e) {
      throw new Error(`cannot reach the server (${e.message})`);
    }
    if (!res.ok) {
      const body = await res.json().catch(() => null);
      throw new Error(body?.error?.message || `HTTP ${res.status}`);
    }
    const href = URL.createObjectURL(await res.blob());
    const a = el("a", { href, download: "payouts.csv", hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(href), 60000);
  } catch (err) {
    toast(`Could not download the payouts: ${err.message}`, "error");
  } finally {
    btn.disabled = false;
  }
}

async function onCreateShop(ev) {
  ev.preventDefault();
  if (!identity) { toast(SHARE_SIGNIN_TEXT, "error"); return; }
  const title = byId("shop-title-input").value.trim();
  const pools = Array.from(byId("shop-pool-list").querySelectorAll("input:checked"), (i) => i.value);
  const errEl = byId("shop-error");
  setText(errEl, "");
  if (!title) { setText(errEl, "Name your shop."); return; }
  if (!pools.length) { setText(errEl, "Pick at least one product to sell."); return; }
  const btn = byId("shop-create");
  btn.disabled = true;
  try {
    const shop = await growthApi("POST", "/api/shops", { title, pools });
    byId("shop-created-url").value = new URL(shop.url, location.origin).href;
    byId("shop-created").dataset.shopId = shop.shop_id;
    show(byId("shop-created"), true);
    byId("shop-title-input").value = "";
    for (const i of byId("shop-pool-list").querySelectorAll("input:checked")) i.checked = false;
    toast(`Your mini-shop “${shop.title}” is open.`, "ok");
    refreshEarn();
  } catch (err) {
    setText(errEl, err.message);
    errEl.dataset.code = err.code || "ERROR";
  } finally {
    btn.disabled = false;
  }
}

function wireGrowth() {
  byId("share-room-button").addEventListener("click", () => (earnOpen ? setEarnOpen(false) : openEarn("")));
  byId("card-share").addEventListener("click", (ev) => openEarn(ev.currentTarget.dataset.productId));
  byId("earn-close").addEventListener("click", () => setEarnOpen(false));
  byId("earn-backdrop").addEventListener("click", () => setEarnOpen(false));
  byId("earn-refresh").addEventListener("click", () => refreshEarn());
  byId("share-copy").addEventListener("click", () => copyLink(byId("share-url"), shareStatus));
  byId("share-native").addEventListener("click", nativeShare);
  byId("earn-payouts").addEventListener("click", downloadPayouts);
  byId("shop-form").addEventListener("submit", onCreateShop);
  byId("shop-form").addEventListener("input", () => setText(byId("shop-error"), ""));
  byId("shop-created-copy").addEventListener("click", () => copyLink(byId("shop-created-url"), (t) => toast(t, "ok")));
  for (const id of ["bag-button", "my-orders-button"]) {  // the other panels close this one
    byId(id).addEventListener("click", () => { if (earnOpen) setEarnOpen(false); });
  }
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && earnOpen) setEarnOpen(false); });
}

// ---------------------------------------------------------------------------------------------
// Remind me (docs/CLIENT.md, "Remind me"): a signed-in viewer's reminder of a scheduled sale (a bag
// row's `remind-<sale_id>`, the card's `card-remind`) or of the show while it is not live (the top
// bar's `remind-show`): PUT / DELETE /api/me/reminders/{room}[/{sale}]; the waiting ones are read
// (GET /api/me/reminders) at each join and after each toggle. A reminder that fires, or a host's
// notice, arrives as a `notice` message: shown in `notice-toast`.

const BELL_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 21.5a2.3 2.3 0 002.2-1.6H9.8a2.3 2.3 0 002.2 1.6zM18 16v-5a6 6 0 00-4.5-5.8V4.5a1.5 1.5 0 00-3 0v.7A6 6 0 006 11v5l-2 2h16z"/></svg>';
const REMIND_SIGNIN_TEXT = "Reminders need signing in: open this live from the shop's site, signed in.";
const NOTICE_MS = 10000;
// user: whose; keys: "<room>|<sale or ''>" of the waiting reminders; busy: keys with a change in flight;
// gen: bumped per identity; reads: the last read started (only its answer is kept)
const reminders = { user: null, keys: new Set(), loaded: false, busy: new Set(), gen: 0, reads: 0 };
const shownNotices = new Set();
let noticeTimer = null;
const remindKey = (saleId) => `${roomId}|${saleId || ""}`;

function remindButton() {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "save-button remind-button";
  b.hidden = true;
  b.setAttribute("aria-pressed", "false");
  b.innerHTML = `${BELL_ICON}<span class="save-label" aria-hidden="true">Remind</span>`;
  return b;
}

function resetReminders() {
  Object.assign(reminders, { user: identity?.user ?? null, keys: new Set(), loaded: false, busy: new Set(),
    gen: reminders.gen + 1 });
}

async function loadReminders() {
  if (!identity) return;
  if (reminders.user !== identity.user) resetReminders();
  const gen = reminders.gen;
  const read = ++reminders.reads;
  try {
    const out = await growthApi("GET", "/api/me/reminders");
    if (gen !== reminders.gen || read !== reminders.reads) return;  // another viewer, or a later read answers
    reminders.keys = new Set((out.reminders || []).map((r) => `${r.room_id}|${r.sale_id || ""}`));
    reminders.loaded = true;
  } catch (err) {
    if (gen === reminders.gen && err.status === 401) onClientError({ detail: { code: "UNAUTHORIZED" } });
  } finally {
    render();
  }
}

async function onRemindTap(saleId) {
  if (!identity) { toast(REMIND_SIGNIN_TEXT, "error"); return; }
  if (reminders.user !== identity.user) resetReminders();
  const key = remindKey(saleId);
  if (reminders.busy.has(key)) return;  // one change at a time per target
  const on = !reminders.keys.has(key);
  const gen = reminders.gen;
  const path = `/api/me/reminders/${encodeURIComponent(roomId)}${saleId ? `/${encodeURIComponent(saleId)}` : ""}`;
  reminders.busy.add(key);
  render();
  try {
    await growthApi(on ? "PUT" : "DELETE", path);
    if (gen !== reminders.gen) return;
    if (on) reminders.keys.add(key); else reminders.keys.delete(key);
    toast(!on ? "Reminder removed." : saleId ? "We will remind you when this deal starts." : "We will remind you when the show goes live.", "ok");
    loadReminders();
  } catch (err) {
    if (gen !== reminders.gen) return;
    if (err.status === 401) { onClientError({ detail: { code: "UNAUTHORIZED" } }); return; }
    toast(`Could not ${on ? "set" : "remove"} the reminder: ${err.message}`, "error");
  } finally {
    if (gen === reminders.gen) reminders.busy.delete(key);
    render();
  }
}

/** A Remind me toggle (saleId: a scheduled sale; "" the show; null: hidden), hidden for anonymous watchers. */
function renderRemind(btn, saleId, title = "") {
  if (!btn) return;
  const visible = !!identity && saleId !== null && saleId !== undefined;
  show(btn, visible);
  if (!visible) return;
  const key = remindKey(saleId);
  if (saleId) {
    if (btn.dataset.testid !== "card-remind") setAttr(btn, "data-testid", `remind-${saleId}`);
    setAttr(btn, "data-sale-id", saleId);
  }
  const on = reminders.user === identity.user && reminders.keys.has(key);
  const busy = reminders.busy.has(key);
  setAttr(btn, "aria-pressed", on ? "true" : "false");
  setAttr(btn, "aria-busy", busy ? "true" : null);
  setAttr(btn, "data-state", busy ? "saving" : on ? "on" : "off");
  const what = saleId ? `when ${title ? `the deal on ${title}` : "this deal"} starts` : "when the show goes live";
  setAttr(btn, "aria-label", `Remind me ${what}`);
  setAttr(btn, "title", on ? `You will be reminded ${what}: tap to cancel` : `Remind me ${what}`);
  const label = btn.querySelector(".save-label");
  if (label) setText(label, on ? "Set" : "Remind");
}

/** Called by render(): the show's toggle, and my reminders read again for another identity. */
function renderReminders() {
  if ((identity?.user ?? null) !== reminders.user) {
    resetReminders();
    if (identity && joinedOnce) loadReminders();
  }
  renderRemind(byId("remind-show"), client?.room && client.room.status !== "live" ? "" : null, client?.room?.title || "");
}

/** A `notice` (a reminder that fired, a host's notice): a toast with its title; a link when it is
 *  about another page, a View that puts the sale on the card when it is about this one. */
function showNotice(n) {
  if (!n || shownNotices.has(n.notice_id)) return;
  shownNotices.add(n.notice_id);
  const box = byId("notice-toast");
  const target = n.url ? new URL(n.url, location.href) : null;
  const here = !target || (target.origin === location.origin && target.pathname === location.pathname);
  const live = !n.sale_id;
  setText(byId("notice-text"), `${n.kind === "reminder" ? (live ? "Live now: " : "Starting now: ") : "Deal: "}${n.title || ""}`);
  const link = byId("notice-link");
  show(link, !here);
  if (!here) link.href = target.href;
  show(byId("notice-view"), here && !!n.sale_id && !!client?.sales.get(n.sale_id));
  box.dataset.saleId = n.sale_id || "";
  box.dataset.noticeId = n.notice_id || "";
  box.dataset.kind = n.kind || "";
  show(box, true);
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => show(box, false), NOTICE_MS);
  if (identity && n.kind === "reminder") loadReminders();  // the one that fired is gone
}

function wireReminders() {
  byId("remind-show").addEventListener("click", () => onRemindTap(""));
  byId("card-remind").addEventListener("click", (ev) => onRemindTap(ev.currentTarget.dataset.saleId));
  byId("notice-view").addEventListener("click", () => {
    const id = byId("notice-toast").dataset.saleId;
    if (id) viewSale(id);
    show(byId("notice-toast"), false);
  });
  byId("notice-close").addEventListener("click", () => show(byId("notice-toast"), false));
}

main().catch((err) => {
  console.error(err);
  toast(`Could not start: ${err.message || err}`, "error");
});
