// The merchant's stock-pool page (/merchant): the merchant's pools with live numbers (polled every
// second) across every room's sales and the channels, a form to open a pool, restock / adjust with a
// reason, and the ledger of the selected pool. HTTP only (docs/CLIENT.md "The merchant page").
import { formatMoney, tokenClaims } from "/static/livesale.js";
import { apiWith, byId, el, fmtInt, minorDigits, num, readToken, setText, toast } from "/static/ui.js";

const TOKEN_KEY = "livesale.merchantToken";
const POOL_KEY = "livesale.merchantPool";
const POLL_MS = 1000;
const MAX_VIEWS = 12;           // pools whose sales are fetched every poll (beyond that: the selected one)

let token = null;
let merchantId = "";
let pools = [];                 // GET /api/pools
const views = new Map();        // pool_id -> GET /api/pools/{pool} (sales, channels)
let ledger = { pool: null, entries: [] };
let selected = sessionStorage.getItem(POOL_KEY) || null;
let generation = 0;             // bumped by sign-in / sign-out: a stale poll loop stops
let pollTimer = null;
let failures = 0;
// shopkeepers (docs/CLIENT.md "Share & earn"): which of my pools are open to viewers' mini-shops, and at
// what commission (GET /api/shop-pools lists the open ones; read every 10 s and after a change)
const SHELF_MS = 10000;
let shelf = null;               // pool_id -> commission_bps of my open pools; null: not read yet
let shelfAt = 0;
const shopForm = { pool: null, dirty: false };  // the pool the form shows; dirty: edited, not saved yet

// ---------------------------------------------------------------------------------------------
// helpers

const api = apiWith(() => token);

function fmtSigned(n) {
  return `${num(n) > 0 ? "+" : num(n) < 0 ? "−" : ""}${fmtInt(Math.abs(num(n)))}`;
}
function fmtTime(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}
function newRequestId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();   // secure contexts (https, localhost)
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}
function errText(err) {
  return `${err.code || "ERROR"}: ${err.message || ""}`;
}
function showError(errEl, err) {
  errEl.textContent = err ? errText(err) : "";
  if (err) errEl.dataset.code = err.code || "ERROR"; else delete errEl.dataset.code;
}
function syncChildren(parent, nodes) {
  const cur = parent.children;
  if (cur.length === nodes.length && nodes.every((n, i) => cur[i] === n)) return;
  parent.replaceChildren(...nodes);  // only when the set or the order changed
}

/**
 * A table body kept row by row (keyed): rows are updated in place, so a click or a selection is not
 * lost to the once-a-second refresh. cols: [{testid?, cls?, value(item) -> string | [title, sub]}].
 */
function syncTable(tbody, items, { key, cols, attrs = () => ({}), onclick = null, empty = "" }) {
  const old = new Map();
  for (const tr of tbody.children) if (tr.dataset.key) old.set(tr.dataset.key, tr);
  const rows = items.map((it) => {
    const k = String(key(it));
    let tr = old.get(k);
    if (!tr) {
      tr = el("tr", { "data-key": k });
      for (const c of cols) tr.append(el("td", { class: c.num ? "num" : null, "data-testid": c.testid || null }));
      if (onclick) tr.addEventListener("click", () => onclick(tr.dataset.key));
    }
    for (const [a, v] of Object.entries(attrs(it))) if (tr.getAttribute(a) !== String(v)) tr.setAttribute(a, String(v));
    cols.forEach((c, i) => {
      const td = tr.children[i];
      const v = c.value(it);
      if (Array.isArray(v)) {
        if (td.children.length !== 2) td.replaceChildren(el("div", { class: "cell-title" }), el("div", { class: "cell-sub" }));
        setText(td.children[0], v[0]);
        setText(td.children[1], v[1]);
      } else {
        setText(td, v);
      }
      if (c.cls) td.className = [c.num ? "num" : "", c.cls(it)].filter(Boolean).join(" ");
    });
    return tr;
  });
  if (!rows.length && empty) {
    if (!tbody._empty) tbody._empty = el("tr", { class: "empty" }, el("td", { colspan: String(cols.length) }));
    setText(tbody._empty.firstChild, empty);
    rows.push(tbody._empty);
  }
  syncChildren(tbody, rows);
}

// ---------------------------------------------------------------------------------------------
// sign in


function checkTokenLocally(t) {
  const claims = tokenClaims(t);
  if (!claims) return "That does not look like a token (expected a JWT: xxx.yyy.zzz).";
  if (claims.role !== "merchant") return `This is a ${claims.role || "non-merchant"} token; a merchant token is needed.`;
  if (claims.exp && claims.exp * 1000 < Date.now()) return "This token has expired.";
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
  merchantId = tokenClaims(t).sub || "";
  shelf = null;  // another merchant's open pools are not this one's
  shelfAt = 0;
  try {
    pools = (await api("GET", "/api/pools")).pools || [];
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      showSignin(err.status === 401 ? "The server rejected this token." : `This token may not see stock pools (${err.message}).`);
      return false;
    }
    toast(`Could not load the pools: ${err.message}`, "error");
  }
  sessionStorage.setItem(TOKEN_KEY, t);
  setText(byId("merchant-id"), merchantId);
  byId("signin-form").hidden = true;
  byId("panel").hidden = false;
  byId("signout-button").hidden = false;
  generation += 1;
  render();
  pollLoop(generation);
  return true;
}

// ---------------------------------------------------------------------------------------------
// polling: the list, the pools' views (sales, channels) and the selected pool's ledger

async function refresh() {
  pools = (await api("GET", "/api/pools")).pools || [];
  if (Date.now() - shelfAt > SHELF_MS) await loadShelf();
  if (!pools.some((p) => p.pool_id === selected)) selected = pools.length ? pools[pools.length - 1].pool_id : null;
  const ids = pools.length <= MAX_VIEWS ? pools.map((p) => p.pool_id) : (selected ? [selected] : []);
  const got = await Promise.all(ids.map((id) => api("GET", `/api/pools/${encodeURIComponent(id)}`).catch(() => null)));
  ids.forEach((id, i) => { if (got[i]) views.set(id, got[i]); });
  for (const id of Array.from(views.keys())) if (!pools.some((p) => p.pool_id === id)) views.delete(id);
  if (selected) {
    const pool = selected;
    const { entries } = await api("GET", `/api/pools/${encodeURIComponent(pool)}/ledger?limit=10000`);
    ledger = { pool, entries: entries || [] };
  } else {
    ledger = { pool: null, entries: [] };
  }
}

async function pollLoop(gen) {
  clearTimeout(pollTimer);
  if (gen !== generation || !token) return;
  try {
    await refresh();
    if (gen !== generation) return;
    failures = 0;
    setText(byId("poll-error"), "");
    setText(byId("updated-at"), `updated ${new Date().toLocaleTimeString()}`);
    byId("conn-state").dataset.state = "open";
  } catch (err) {
    if (gen !== generation) return;
    failures += 1;
    byId("conn-state").dataset.state = failures > 2 ? "closed" : "reconnecting";
    setText(byId("poll-error"), errText(err));
    if (err.status === 401) {
      token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      showSignin("The server no longer accepts this token.");
      return;
    }
  }
  byId("banner").hidden = failures < 3;
  render();
  pollTimer = setTimeout(() => pollLoop(gen), POLL_MS);
}

function refreshSoon() {
  generation += 1;
  pollLoop(generation);
}

// ---------------------------------------------------------------------------------------------
// rendering

function returnsBySale(entries) {
  const m = new Map();
  for (const e of entries) if (e.kind === "return" && e.sale_id) m.set(e.sale_id, (m.get(e.sale_id) || 0) + num(e.units));
  return m;
}

function render() {
  setText(byId("pools-count"), pools.length ? String(pools.length) : "");
  syncTable(byId("pools-table").querySelector("tbody"), pools, {
    key: (p) => p.pool_id,
    attrs: (p) => ({ "data-testid": "pool-row", "data-pool-id": p.pool_id, "data-selected": p.pool_id === selected }),
    onclick: (id) => select(id),
    empty: "No pools yet: open one →",
    cols: [
      { value: (p) => [p.title, `${p.pool_id} · ${p.sku}`] },
      { num: true, value: (p) => formatMoney(p.unit_price, p.currency || "EUR") },
      { num: true, testid: "pool-on-hand", value: (p) => fmtInt(p.on_hand) },
      { num: true, testid: "pool-available", value: (p) => fmtInt(p.available) },
      { num: true, testid: "pool-at-sales", value: (p) => fmtInt(p.at_sales) },
      { num: true, testid: "pool-channel-held", value: (p) => fmtInt(p.channel_held) },
      { num: true, testid: "pool-sold", value: (p) => {
        const v = views.get(p.pool_id);
        return v ? fmtInt((v.sales || []).reduce((a, s) => a + num(s.sold), 0) + num(p.channel_sold)) : "–";
      } },
      { num: true, testid: "pool-live-sales", value: (p) => {
        const v = views.get(p.pool_id);
        if (!v) return "–";
        const live = (v.sales || []).filter((s) => !s.ended);
        const rooms = new Set(live.map((s) => s.room_id));
        return live.length ? `${live.length} in ${rooms.size} room${rooms.size === 1 ? "" : "s"}` : "0";
      } },
      { num: true, testid: "pool-shops", value: (p) => (shelf === null ? "–" : shelf.has(p.pool_id) ? pct(shelf.get(p.pool_id)) : "closed") },
    ],
  });
  renderDetail();
}

function renderDetail() {
  const pool = pools.find((p) => p.pool_id === selected);
  const detail = byId("pool-detail");
  detail.hidden = !pool;
  if (!pool) return;
  detail.dataset.poolId = pool.pool_id;
  renderShopkeepers(pool);
  const v = views.get(pool.pool_id);
  const sales = v?.sales || [];
  const entries = ledger.pool === pool.pool_id ? ledger.entries : [];
  const returns = returnsBySale(entries);
  setText(byId("detail-title"), pool.title);
  setText(byId("detail-sub"), `${pool.pool_id} · ${pool.sku} · ${formatMoney(pool.unit_price, pool.currency || "EUR")} · `
    + `channel limit ${pool.per_user_limit}/buyer, pay within ${Math.round(num(pool.hold_ttl_ms) / 1000)} s`);
  const stat = (id, value) => {
    setText(byId(id), value === null ? "–" : fmtInt(value));
    byId(id).dataset.value = value === null ? "" : String(value);
  };
  stat("detail-on-hand", pool.on_hand ?? null);
  stat("detail-available", pool.available ?? null);
  stat("detail-live-allocated", v ? sales.filter((s) => !s.ended).reduce((a, s) => a + num(s.allocated), 0) : null);
  stat("detail-channel-held", pool.channel_held ?? null);
  stat("detail-sold", v ? sales.reduce((a, s) => a + num(s.sold), 0) + num(pool.channel_sold) : null);
  stat("detail-returned", Array.from(returns.values()).reduce((a, n) => a + n, 0));

  // live sales first (newest first), then the ended ones
  const ordered = [...sales].reverse().sort((a, b) => Number(!!a.ended) - Number(!!b.ended));
  setText(byId("detail-sales-count"), sales.length
    ? `${sales.filter((s) => !s.ended).length} live · ${sales.length} in all` : "");
  syncTable(byId("detail-sales").querySelector("tbody"), ordered, {
    key: (s) => s.sale_id,
    attrs: (s) => ({ "data-testid": "sale-row", "data-sale-id": s.sale_id, "data-room-id": s.room_id,
                     "data-ended": !!s.ended }),
    empty: "No sale draws from this pool yet: a host picks it when launching.",
    cols: [
      { testid: "sale-room", value: (s) => s.room_id },
      { value: (s) => [s.title || "", s.sale_id] },
      { testid: "sale-state", value: (s) => (s.ended ? "ended" : "live") },
      { num: true, testid: "sale-allocated", value: (s) => fmtInt(s.allocated) },
      { num: true, testid: "sale-left", value: (s) => fmtInt(s.available) },
      { num: true, testid: "sale-held", value: (s) => fmtInt(s.held) },
      { num: true, testid: "sale-sold", value: (s) => fmtInt(s.sold) },
      { num: true, testid: "sale-returned", value: (s) => (returns.has(s.sale_id) ? fmtInt(returns.get(s.sale_id)) : "–") },
    ],
  });
  const channels = [...(v?.channels || [])];
  if (num(pool.channel_held) > 0 || channels.length) {
    channels.push({ channel: "(held, not paid yet)", orders: null, units: pool.channel_held, pending: true });
  }
  syncTable(byId("detail-channels").querySelector("tbody"), channels, {
    key: (c) => c.channel,
    attrs: (c) => ({ "data-testid": "channel-row", "data-channel": c.pending ? "" : c.channel }),
    empty: "No channel orders yet.",
    cols: [
      { value: (c) => c.channel },
      { num: true, value: (c) => (c.orders === null ? "" : fmtInt(c.orders)) },
      { num: true, value: (c) => fmtInt(c.units) },
    ],
  });

  const roomOf = new Map(sales.map((s) => [s.sale_id, s.room_id]));
  const shown = entries.slice(-500).reverse();  // newest first
  setText(byId("ledger-count"), entries.length ? `${entries.length} entr${entries.length === 1 ? "y" : "ies"}` : "");
  syncTable(byId("ledger").querySelector("tbody"), shown, {
    key: (e) => e.entry_id,
    attrs: (e) => ({ "data-testid": "ledger-row", "data-kind": e.kind, "data-units": e.units }),
    empty: "No entries yet (the ledger is written a moment after each move).",
    cols: [
      { value: (e) => fmtTime(e.at) },
      { testid: "ledger-kind", value: (e) => e.kind },
      { num: true, testid: "ledger-units", value: (e) => fmtSigned(e.units),
        cls: (e) => (num(e.units) > 0 ? "units-pos" : num(e.units) < 0 ? "units-neg" : "") },
      { value: (e) => (e.sale_id ? `${e.sale_id}${roomOf.has(e.sale_id) ? ` (room ${roomOf.get(e.sale_id)})` : ""}` : e.ref || "") },
      { value: (e) => e.reason || "" },
    ],
  });
}

// ---------------------------------------------------------------------------------------------
// shopkeepers: open the selected pool to viewers' mini-shops at a commission (PUT /api/pools/{pool}/shopkeepers)

function pct(bps) {
  return `${(num(bps) / 100).toLocaleString(undefined, { maximumFractionDigits: 2 })}%`;
}

async function loadShelf() {
  try {
    const open = (await api("GET", "/api/shop-pools")).pools || [];
    shelf = new Map(open.filter((p) => p.merchant_id === merchantId).map((p) => [p.pool_id, num(p.commission_bps)]));
    shelfAt = Date.now();
  } catch {
    /* an older server without mini-shops, or a hiccup: the column says "–" */
  }
}

/** The form shows the selected pool's state, unless the merchant is editing it. */
function renderShopkeepers(pool) {
  const form = byId("shopkeepers-form");
  form.dataset.poolId = pool.pool_id;
  const open = shelf?.has(pool.pool_id) ?? false;
  setText(byId("shopkeepers-state"), shelf === null ? "" : open ? `Open at ${pct(shelf.get(pool.pool_id))}` : "Not open to shopkeepers");
  byId("shopkeepers-state").dataset.open = String(open);
  if (shopForm.pool !== pool.pool_id) {  // another pool: the form starts from its state
    Object.assign(shopForm, { pool: pool.pool_id, dirty: false });
    showError(byId("shopkeepers-error"), null);
  }
  if (shopForm.dirty || shelf === null) return;
  byId("shopkeepers-open").checked = open;
  byId("shopkeepers-rate").value = open ? String(num(shelf.get(pool.pool_id)) / 100) : "";
}

async function saveShopkeepers(ev) {
  ev.preventDefault();
  const pool = selected;
  const errEl = byId("shopkeepers-error");
  showError(errEl, null);
  if (!pool) return;
  const isOpen = byId("shopkeepers-open").checked;
  const raw = byId("shopkeepers-rate").value.trim();
  const body = { open: isOpen };
  if (raw) {
    const bps = Math.round(parseFloat(raw) * 100);
    if (!Number.isFinite(bps) || bps < 0 || bps > 10000) {
      showError(errEl, { code: "INVALID", message: "the commission is a percentage from 0 to 100" });
      return;
    }
    body.commission_bps = bps;
  }
  const btn = byId("shopkeepers-save");
  btn.disabled = true;
  try {
    const out = await api("PUT", `/api/pools/${encodeURIComponent(pool)}/shopkeepers`, body);
    if (shelf === null) shelf = new Map();
    if (out.open) shelf.set(pool, num(out.commission_bps)); else shelf.delete(pool);
    shopForm.dirty = false;
    shopForm.pool = null;  // refill from what the server said
    toast(out.open ? `${pool} is open to shopkeepers at ${pct(out.commission_bps)}` : `${pool} is closed to shopkeepers`, "ok");
    render();
    loadShelf();
  } catch (err) {
    showError(errEl, err);
    toast(errText(err), "error");
  } finally {
    btn.disabled = false;
  }
}

function select(id) {
  if (id === selected) return;
  selected = id;
  sessionStorage.setItem(POOL_KEY, id);
  ledger = { pool: null, entries: [] };
  showError(byId("stock-error"), null);
  setText(byId("stock-result"), "");
  render();
  refreshSoon();
}

// ---------------------------------------------------------------------------------------------
// actions

function wire() {
  byId("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    signIn(byId("token-input").value.trim().replace(/^Bearer\s+/i, ""));
  });
  byId("signout-button").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    generation += 1;
    clearTimeout(pollTimer);
    token = null;
    showSignin();
  });

  byId("pool-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const f = new FormData(form);
    const currency = String(f.get("currency") || "EUR").trim().toUpperCase();
    const body = {
      sku: String(f.get("sku")).trim(), title: String(f.get("title")).trim(), currency,
      unit_price: Math.round(parseFloat(f.get("price")) * 10 ** minorDigits(currency)),
      units: parseInt(f.get("units"), 10),
      per_user_limit: parseInt(f.get("per_user_limit"), 10),
      hold_ttl_s: parseInt(f.get("hold_ttl_s"), 10),
    };
    const poolId = String(f.get("pool_id") || "").trim();
    if (poolId) body.pool_id = poolId;
    const errEl = byId("pool-form-error");
    showError(errEl, null);
    setText(byId("pool-form-result"), "");
    const btn = byId("pool-open-button");
    btn.disabled = true;
    try {
      const pool = await api("POST", "/api/pools", body);
      setText(byId("pool-form-result"), `Opened ${pool.pool_id}`);
      toast(`Pool ${pool.pool_id} opened with ${fmtInt(pool.available)} units of ${pool.sku}`, "ok");
      for (const name of ["title", "sku", "pool_id", "price"]) form.elements[name].value = "";
      selected = pool.pool_id;
      sessionStorage.setItem(POOL_KEY, selected);
      if (!pools.some((p) => p.pool_id === pool.pool_id)) pools.push(pool);
      render();
      refreshSoon();
    } catch (err) {
      showError(errEl, err);
      toast(errText(err), "error");
    } finally {
      btn.disabled = false;
    }
  });

  byId("shopkeepers-form").addEventListener("submit", saveShopkeepers);
  byId("shopkeepers-form").addEventListener("input", () => { shopForm.dirty = true; });
  byId("stock-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const f = new FormData(form);
    const pool = selected;
    const errEl = byId("stock-error");
    showError(errEl, null);
    setText(byId("stock-result"), "");
    const kind = String(f.get("kind"));
    const units = parseInt(f.get("units"), 10);
    if (!pool) return;
    if (!Number.isInteger(units) || units === 0 || (kind === "restock" && units < 0)) {
      showError(errEl, { code: "INVALID", message: kind === "restock" ? "a restock adds 1 unit or more (use adjust to take units out)"
        : "adjust by a non-zero number of units" });
      return;
    }
    const btn = byId("stock-button");
    btn.disabled = true;
    try {
      // a fresh request id per submit: the server applies each id once (a resent request moves nothing twice)
      const out = await api("POST", `/api/pools/${encodeURIComponent(pool)}/stock`,
        { units, kind, reason: String(f.get("reason") || "").trim(), request_id: newRequestId() });
      const p = out.pool;
      const i = pools.findIndex((x) => x.pool_id === p.pool_id);
      if (i >= 0) pools[i] = { ...pools[i], ...p };
      setText(byId("stock-result"), `${kind === "restock" ? "Restocked" : "Adjusted"} ${fmtSigned(units)}: ${fmtInt(p.available)} available`);
      toast(`${pool}: ${kind} ${fmtSigned(units)}`, "ok");
      form.elements.units.value = "";
      form.elements.reason.value = "";
      render();
      refreshSoon();
    } catch (err) {
      showError(errEl, err);
      toast(errText(err), "error");
    } finally {
      btn.disabled = false;
    }
  });
}

wire();
const initial = readToken(TOKEN_KEY);
if (initial) signIn(initial); else showSignin();
