// livesale.js: the browser client of the livesale wire protocol v1 (docs/PROTOCOL.md).
//
// A plain ES module with no dependencies and no build step. Works in any modern browser
// (and in Deno/Node 22+, which have WebSocket, EventTarget and crypto built in).
//
//   import { connect } from "/static/livesale.js";
//   const live = connect({ room: "demo", token, onEvent: (msg, client) => render(client) });
//   const result = await live.buy(saleId);          // buy_result
//   if (result.code === "RESERVED") await live.pay(result.hold);
//
// See docs/CLIENT.md for the full API.

export const SUBPROTOCOL = "livesale.v1.json";
export const PROTOCOL_VERSION = "livesale.v1";

/** Backoff schedule (seconds) for reconnects; the last value is the cap. */
const BACKOFF_S = [1, 2, 4, 8, 16];
/** Backoff schedule (seconds) for a failed order catch-up (GET /api/me/orders); the last value is the cap. */
const ORDERS_BACKOFF_S = [1, 2, 4, 8, 16, 30, 60];
/** Margin below the newest `settled_at` held when asking for missed orders (docs/PROTOCOL.md). */
const ORDERS_MARGIN_MS = 30000;
const RID_RE = /^[A-Za-z0-9_.:@-]{1,128}$/;

/** An `error` reply (or a local failure such as a timeout) turned into an exception. */
export class LiveSaleError extends Error {
  constructor(code, message, reply = null) {
    super(message ? `${code}: ${message}` : code);
    this.name = "LiveSaleError";
    this.code = code;
    this.reply = reply;
  }
}

/** A fresh request id: crypto.randomUUID where available (secure contexts), random hex otherwise. */
export function newRid(prefix = "") {
  let id;
  if (globalThis.crypto && typeof globalThis.crypto.randomUUID === "function") {
    id = globalThis.crypto.randomUUID();
  } else {
    const bytes = new Uint8Array(16);
    (globalThis.crypto || { getRandomValues: (b) => b.map(() => Math.floor(Math.random() * 256)) })
      .getRandomValues(bytes);
    id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  return prefix ? `${prefix}-${id}` : id;
}

/** Format an amount in minor units (cents) with its ISO currency, e.g. (1999, "EUR") -> "€19.99". */
export function formatMoney(minor, currency = "EUR", locale = undefined) {
  if (minor === null || minor === undefined || Number.isNaN(Number(minor))) return "";
  let fmt;
  try {
    fmt = new Intl.NumberFormat(locale, { style: "currency", currency });
  } catch {
    return `${(Number(minor) / 100).toFixed(2)} ${currency}`;
  }
  const digits = fmt.resolvedOptions().maximumFractionDigits;
  return fmt.format(Number(minor) / 10 ** digits);
}

/** `ws(s)://host/ws` from a page location, an http(s) base URL or a ws(s) URL. */
export function wsUrl(url) {
  const loc = globalThis.location;
  if (!url) {
    if (!loc) throw new LiveSaleError("INVALID", "url is required outside a browser page");
    return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`;
  }
  const u = new URL(url, loc ? loc.href : undefined);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (u.pathname === "/" || u.pathname === "") u.pathname = "/ws";
  return u.toString();
}

/** The http(s) base of the HTTP API (no trailing slash) from a ws(s) or http(s) URL: the WebSocket
 *  URL's origin plus its path without the final `/ws` (so a server mounted under a prefix works too). */
export function apiBase(url) {
  const loc = globalThis.location;
  let u;
  try { u = new URL(url, loc ? loc.href : undefined); } catch { return null; }
  if (u.protocol === "ws:") u.protocol = "http:";
  else if (u.protocol === "wss:") u.protocol = "https:";
  const path = u.pathname.replace(/\/ws\/?$/, "").replace(/\/+$/, "");
  return `${u.origin}${path}`;
}

/** Decode a JWT's payload without verifying it (to show a name or check `exp` locally). */
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(
      Array.from(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")),
        (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
    );
    return JSON.parse(json);
  } catch {
    return null;
  }
}

/**
 * Sequenced room events (the critical lane), mirrored from the server's `commerce.events.EventType`
 * (tests/unit/test_protocol.py fails when the two lists differ).
 */
export const EventType = Object.freeze({
  ROOM_STATUS: "room_status",
  ROOM_UPDATED: "room_updated",
  PRODUCT_ADDED: "product_added",
  PRODUCT_PINNED: "product_pinned",
  PRODUCT_UNPINNED: "product_unpinned",
  SALE_SCHEDULED: "sale_scheduled",
  SALE_OPEN: "sale_open",
  SALE_SOLD_OUT: "sale_sold_out",
  SALE_CLOSED: "sale_closed",
  ANNOUNCEMENT: "announcement",
  COMMENT_HIDDEN: "comment_hidden",
  USER_MUTED: "user_muted",
  TEAMS_SET: "teams_set",
  POLL_OPENED: "poll_opened",
  POLL_CLOSED: "poll_closed",
  COUPON_DROP: "coupon_drop",
  COUPON_DROP_ENDED: "coupon_drop_ended",
  DRAW_OPENED: "draw_opened",
  DRAW_RESULT: "draw_result",
  DRAW_REDRAWN: "draw_redrawn",
});

// Replies and personal messages never carry `seq`; every room event does (including types added
// after this client was written, which are still counted so that no false gap is seen).
const UNSEQUENCED = new Set(["snapshot", "resumed", "hello", "clock", "pong", "tick", "ok", "error",
  "buy_result", "pay_result", "release_result", "order_confirmed", "payment_started", "payment_refunded",
  "order_refunded", "deposit_expired", "team_joined", "vote_result", "claim_result", "entry_result", "draw_won",
  "shelf", "notice"]);
// Names of the client's own events. A server message of the same type is not dispatched under
// that name (it would mean two different things): raw `clock` replies are clock-sync samples, and a
// server `error` is dispatched once, as the client's `error` event. Every message is still in `message`.
const LOCAL_EVENTS = new Set(["state", "change", "message", "clock", "error", "joined"]);
// Requests that are idempotent by rid on the server: re-sent after a reconnect.
// The interaction requests answer the same when repeated: join_team (the same team), vote
// (ALREADY_VOTED with the vote that counted), claim_coupon (the same rid: the same answer),
// enter_draw (ALREADY_ENTERED).
const IDEMPOTENT = new Set(["buy", "pay", "release", "checkout",  // checkout: the same payment per hold
  "join_team", "vote", "claim_coupon", "enter_draw"]);
const REPLY_OF = { buy: "buy_result", pay: "pay_result", release: "release_result", checkout: "payment_started",
  join_team: "team_joined", vote: "vote_result", claim_coupon: "claim_result", enter_draw: "entry_result" };

/**
 * A live room connection. Extends EventTarget; every event is a CustomEvent whose `detail` is
 * the server message (or a small object for the local events `state`, `change`, `clock`, `error`).
 *
 * Events: `state` ({state, attempt, delay_ms}), `message` (every server message), one event per
 * server message type (`snapshot`, `tick`, `sale_open`, `buy_result`, ...; not `clock` or `error`,
 * which are local event names), `change` ({cause}) after local state changed, `clock` ({offset, rtt})
 * after a clock sync, `error` ({code, message, rid?, request?}) once per server `error` message.
 */
export class LiveSaleClient extends EventTarget {
  /**
   * @param {object} opts
   * @param {string} opts.room           room id to join
   * @param {string} [opts.token]        viewer or host JWT (watching works without one); setToken() changes it
   * @param {string} [opts.url]          ws(s):// or http(s):// URL of the server (default: this page's host)
   * @param {Function} [opts.onEvent]    called as onEvent(msg, client) for every server message and local event
   * @param {number} [opts.pingIntervalMs=20000]      ping interval while nothing is at stake
   * @param {number} [opts.busyPingIntervalMs=4000]   ping interval while a sale is open (or opens within a
   *                                                  minute) or one of your holds is unpaid
   * @param {number} [opts.pongTimeoutMs=4000]        no pong (and nothing else) this long after a ping: the link is dead
   * @param {number} [opts.requestTimeoutMs=15000]
   * @param {number} [opts.clockSamples=5]
   * @param {Function} [opts.WebSocket]  WebSocket implementation (default: globalThis.WebSocket)
   * @param {string} [opts.apiUrl]       http(s) base URL of the HTTP API (default: derived from the WebSocket URL)
   * @param {Function} [opts.fetch]      fetch implementation for the order catch-up (default: globalThis.fetch)
   * @param {boolean} [opts.catchUpOrders=true]  after each join, fetch the orders missed (GET /api/me/orders)
   * @param {number} [opts.ordersPageLimit=100]  orders per page of that fetch
   * @param {number} [opts.ordersMaxPages=5]     pages followed per catch-up (the rest on the next one)
   */
  constructor(opts = {}) {
    super();
    if (!opts.room) throw new LiveSaleError("INVALID", "room is required");
    this.url = wsUrl(opts.url);
    this.roomId = opts.room;
    this.token = opts.token || null;
    // more fields of every `join` (the first, a reconnect's, a re-join): e.g. a share link's `ref` and the
    // page's per-browser `device` id (docs/PROTOCOL.md, Growth and data). A function is called per join.
    this.joinFields = opts.joinFields || null;
    this.onEvent = opts.onEvent || null;
    this.pingIntervalMs = opts.pingIntervalMs ?? 20000;
    this.busyPingIntervalMs = opts.busyPingIntervalMs ?? 4000;
    this.pongTimeoutMs = opts.pongTimeoutMs ?? 4000;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 15000;
    this.clockSamples = opts.clockSamples ?? 5;
    this.WebSocketImpl = opts.WebSocket || globalThis.WebSocket;
    this.apiUrl = apiBase(opts.apiUrl || this.url);
    this.fetchImpl = opts.fetch || (typeof globalThis.fetch === "function" ? globalThis.fetch.bind(globalThis) : null);
    this.catchUpOrders = opts.catchUpOrders ?? true;
    this.ordersPageLimit = Math.max(1, Math.min(200, opts.ordersPageLimit ?? 100));
    this.ordersMaxPages = Math.max(1, opts.ordersMaxPages ?? 5);

    /** "idle" | "connecting" | "open" | "reconnecting" | "closed" */
    this.state = "idle";
    this.attempt = 0;
    this.session = null;
    this.limits = null;
    this.lastClose = null; // {code, reason}
    /** false between the browser's `offline` and `online` events (navigator.onLine at start). */
    this.online = globalThis.navigator?.onLine !== false;
    this.fatal = null;     // {code, message} when the server refused the join

    // clock sync
    this.offset = 0;       // server time - client time, ms
    this.rtt = null;       // rtt of the sample the offset came from
    this.clockSynced = false;

    this._resetRoomState();
    /** Your holds by hold id: {hold, sale, qty, pay_by, status: held|confirmed|released|expired, order?} */
    this.holds = new Map();
    /** Orders confirmed by settlement (order_confirmed, or recovered by the catch-up after a join),
     *  one per order_id, in the order they became known. */
    this.orders = [];
    /** The order catch-up after each join: {state: idle|running|ok|failed, at?, error?, attempt, recovered}. */
    this.ordersSync = { state: "idle", attempt: 0, recovered: 0 };
    this._resetPersonalInteraction();
    this._ordersFloor = null;    // server time of the first join: the catch-up's start when no order is held
    this._ordersSeen = null;     // newest settled_at the catch-up saw (orders of other rooms included)
    this._ordersRun = null;      // the catch-up in flight (a Promise)
    this._ordersAgain = false;   // another join happened while it ran: run once more

    this._ws = null;
    this._joined = false;
    this._pending = new Map();   // rid -> {msg, resolve, reject, timer, reply}
    this._fireAndForget = new Map(); // rid -> {type, at}
    this._outbox = [];           // messages waiting for a join
    this._timers = { reconnect: null, ping: null, clock: null, resync: null, holds: null, orders: null };
    this._holdTimerAt = null;    // when the hold-expiry timer fires (server time)
    this._clock = null;          // {samples, inflight: {t0, timer}}
    this._lastRx = 0;
    this._ping = { at: 0, deadline: 0 }; // the last ping sent and when its pong is due
    this._onOnline = () => {
      this.online = true;
      if (this.state === "reconnecting") this._reconnectNow();
    };
    // The browser knows the network is gone: do not wait for a heartbeat to notice. The socket is
    // dropped at once (state `reconnecting`, reason `offline`) and re-opened with the usual backoff,
    // immediately on `online`; the resume brings back what was missed.
    this._onOffline = () => {
      this.online = false;
      if (this._ws) this._forceReconnect(true, "offline");
      else if (this.state === "reconnecting") this._setState("reconnecting", { reason: "offline", force: true });
    };
  }

  _resetRoomState() {
    this.room = null;        // {room_id, title, status, player_url}
    this.pinned = null;      // product or null
    this.products = [];      // [product]
    this.sales = new Map();  // sale_id -> Sale (units_left merged from ticks)
    this.comments = [];      // [{id, user, name, text, ts}], hidden ones removed
    this.hiddenComments = new Set();
    this.muted = new Set();
    this.announcements = []; // [{text, ts, seq}], newest last
    this.bought = [];        // "just bought" ticker: [{name, sale_id, qty, ts}], newest last
    this.viewers = 0;
    this.likes = 0;
    this.epoch = null;
    this.seq = null;
    this.you = null;         // {user, name, role, team?}
    // interaction (docs/PROTOCOL.md Interaction): the room's objects, live counts merged from ticks
    this.teams = null;       // {teams: [{team_id, name, colour, badge}], allow_switch, switch_cooldown_s} or null
    this.leaderboard = [];   // [{team_id, members, present, likes, orders, gmv}], the server's order
    this.polls = new Map();  // poll_id -> Poll (counts and total from ticks)
    this.drops = new Map();  // drop_id -> Drop (claimed, redeemed, left from ticks)
    this.draws = new Map();  // draw_id -> Draw (entrants from ticks; redraws from draw_redrawn)
  }

  /** Your own interaction state: kept across snapshots and reconnects, cleared when the token's
   *  user changes (setToken). */
  _resetPersonalInteraction() {
    this.myTeam = null;          // your fan team's id in this room (snapshot you.team, team_joined)
    this.teamSwitchAt = null;    // when a switch is allowed (server ms; null: no switching / unknown)
    this.myVotes = new Map();    // poll_id -> the option that counted
    this.myClaims = new Map();   // drop_id -> {code, coupon?, left?, at}: your latest claim answer
    this.myEntries = new Map();  // draw_id -> {code, entry_id?, message?, at}: your latest entry answer
    this.wins = new Map();       // draw_id -> draw_won {draw_id, entry_id, prize, hold?, coupon?, pay_by}
    this.coupons = new Map();    // drop_id -> Coupon: your wallet (claim answers, draw_won, myCoupons())
    this.couponsSync = { state: "idle" };
    this.shelf = null;           // {order: [product ids], personal}: your order of the show's products (`shelf`)
    this.notices = [];           // `notice`s received: reminders that fired, audience notices (newest first)
  }

  // ---------------------------------------------------------------------------------------------
  // lifecycle

  /** Open the connection (idempotent). Returns a Promise resolved after the first join. */
  start() {
    if (this.state === "idle" || this.state === "closed") {
      this.fatal = null;
      this._closing = false;
      if (globalThis.addEventListener) {
        globalThis.addEventListener("online", this._onOnline);
        globalThis.addEventListener("offline", this._onOffline);
      }
      this._open("connecting");
      this._armHoldExpiry();
    }
    if (this._joined) return Promise.resolve(this);
    return new Promise((resolve, reject) => {
      const onJoin = () => { cleanup(); resolve(this); };
      const onState = (e) => {
        if (e.detail.state === "closed") { cleanup(); reject(new LiveSaleError(this.fatal?.code || "CLOSED", this.fatal?.message || "connection closed")); }
      };
      const cleanup = () => {
        this.removeEventListener("joined", onJoin);
        this.removeEventListener("state", onState);
      };
      this.addEventListener("joined", onJoin);
      this.addEventListener("state", onState);
    });
  }

  /** Close for good (no reconnect). Pending requests are rejected. */
  close() {
    this._closing = true;
    if (globalThis.removeEventListener) {
      globalThis.removeEventListener("online", this._onOnline);
      globalThis.removeEventListener("offline", this._onOffline);
    }
    this._clearTimers();
    if (this._ws) {
      try { this._ws.close(1000, "bye"); } catch { /* ignore */ }
    }
    this._ws = null;
    this._joined = false;
    this._failPending(new LiveSaleError("CLOSED", "client closed"), () => true);
    this._setState("closed");
  }

  /** Replace the token (e.g. after a refresh) and re-join with it. */
  setToken(token) {
    const before = tokenClaims(this.token || "")?.sub ?? null;
    this.token = token || null;
    if ((tokenClaims(this.token || "")?.sub ?? null) !== before) this._resetPersonalInteraction();
    if (this.state === "closed" && this.fatal) { this.start(); return; }
    if (this._ws && this._ws.readyState === 1) this._sendJoin();
  }

  /** Server time now, in ms, from the measured clock offset. */
  serverNow() {
    return Date.now() + this.offset;
  }

  get joined() { return this._joined; }

  _setState(state, extra = {}) {
    if (this.state === state && !extra.force) return;
    this.state = state;
    this._emit("state", { type: "state", state, attempt: this.attempt, ...extra });
  }

  _open(state) {
    this._setState(state);
    let ws;
    try {
      ws = new this.WebSocketImpl(this.url, [SUBPROTOCOL]);
    } catch (err) {
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    this._joined = false;
    ws.onopen = () => {
      if (ws !== this._ws) return;
      this._lastRx = Date.now();
      this._sendJoin();
      this._startPing();
    };
    ws.onmessage = (ev) => {
      if (ws !== this._ws) return;
      this._lastRx = Date.now();
      this._ping.deadline = 0; // anything at all from the server answers the outstanding ping
      if (typeof ev.data !== "string") return; // JSON subprotocol: text frames only
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg && typeof msg === "object" && typeof msg.type === "string") this._handle(msg);
    };
    ws.onclose = (ev) => {
      if (ws !== this._ws) return;
      this.lastClose = { code: ev.code, reason: ev.reason };
      this._ws = null;
      this._joined = false;
      this._stopPing();
      this._clock = null;
      clearTimeout(this._timers.clock);
      if (this._closing || this.fatal) {
        this._failPending(new LiveSaleError("CLOSED", "connection closed"), () => true);
        this._setState("closed");
        return;
      }
      // Non-idempotent requests can't be re-sent safely: fail them now.
      this._failPending(new LiveSaleError("DISCONNECTED", "connection lost before the reply"),
        (p) => p.sent && !IDEMPOTENT.has(p.msg.type));
      this._scheduleReconnect(this.online ? "closed" : "offline");
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  _scheduleReconnect(reason = "closed") {
    this.attempt += 1;
    const base = BACKOFF_S[Math.min(this.attempt, BACKOFF_S.length) - 1] * 1000;
    const delay = Math.round(base / 2 + Math.random() * base / 2); // "equal jitter"
    this._setState("reconnecting", { delay_ms: delay, reason: this.online ? reason : "offline", force: true });
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = setTimeout(() => this._open("reconnecting"), delay);
  }

  _reconnectNow() {
    clearTimeout(this._timers.reconnect);
    if (!this._ws) this._open("reconnecting");
  }

  /** Drop the socket and reconnect (on a missing pong, the browser going offline, a sequence gap). */
  _forceReconnect(withResume = true, reason = "resync") {
    if (!withResume) { this.epoch = null; this.seq = null; }
    const ws = this._ws;
    if (ws) {
      this._ws = null;
      try { ws.close(4000, "client resync"); } catch { /* ignore */ }
      this._joined = false;
      this._stopPing();
      this._failPending(new LiveSaleError("DISCONNECTED", "connection reset"), (p) => p.sent && !IDEMPOTENT.has(p.msg.type));
      this._clock = null;
      clearTimeout(this._timers.clock);
      this._scheduleReconnect(reason);
    }
  }

  _clearTimers() {
    for (const k of Object.keys(this._timers)) {
      clearTimeout(this._timers[k]);
      clearInterval(this._timers[k]);
    }
    this._holdTimerAt = null;
  }

  // Heartbeat: a `ping` after pingIntervalMs (20 s) without a ping or any message from the server,
  // busyPingIntervalMs (4 s) while something is at stake (see _busy); no pong and no other message
  // within pongTimeoutMs of a ping means the link is
  // silently dead (a dead Wi-Fi, a NAT that dropped the flow): the socket is replaced at once and the
  // client resumes. A one-second check drives both, so a sale opening shortens the interval at once.
  _startPing() {
    this._stopPing();
    this._ping = { at: Date.now(), deadline: 0 };
    this._timers.ping = setInterval(() => this._heartbeat(), Math.min(1000, this.busyPingIntervalMs));
  }

  _heartbeat() {
    if (!this._ws || this._ws.readyState !== 1) return;
    const now = Date.now();
    if (this._ping.deadline && now > this._ping.deadline) {
      this._forceReconnect(true, "heartbeat");
      return;
    }
    // Nothing at all for two long intervals (a ping that could not be sent, say): dead as well.
    if (now - this._lastRx > this.pingIntervalMs * 2 + 5000) {
      this._forceReconnect(true, "heartbeat");
      return;
    }
    // Pings fill silences only: a busy room's ticks already prove the link, so the burst at a sale's
    // open costs the server no extra pings.
    const interval = this._busy() ? this.busyPingIntervalMs : this.pingIntervalMs;
    const quiet = now - Math.max(this._ping.at, this._lastRx);
    if (!this._ping.deadline && quiet >= interval && this._raw({ type: "ping" })) {
      this._ping = { at: now, deadline: now + this.pongTimeoutMs };
    }
  }

  /** Whether a lost connection would cost the viewer now: an open sale (or one opening within a
   *  minute), or one of their holds still waiting for payment. */
  _busy(now = this.serverNow()) {
    for (const h of this.holds.values()) {
      if (h.status === "held" && (!h.pay_by || h.pay_by > now)) return true;
    }
    for (const s of this.sales.values()) {
      const phase = this.salePhase(s, now);
      if (phase === "open" || (phase === "scheduled" && s.starts_at - now < 60000)) return true;
    }
    return false;
  }

  _stopPing() {
    clearInterval(this._timers.ping);
    this._timers.ping = null;
  }

  _sendJoin() {
    const extra = typeof this.joinFields === "function" ? this.joinFields() : this.joinFields;
    const msg = { ...(extra || {}), type: "join", room: this.roomId };
    if (this.token) msg.token = this.token;
    if (this.epoch !== null && this.seq !== null) msg.resume = { epoch: this.epoch, seq: this.seq };
    this._raw(msg);
  }

  _raw(msg) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  // ---------------------------------------------------------------------------------------------
  // clock sync

  _startClockSync(samples = this.clockSamples) {
    clearTimeout(this._timers.clock);
    this._clock = { samples: [], want: samples, inflight: null };
    this._sendClockSample();
  }

  _sendClockSample() {
    const c = this._clock;
    if (!c || !this._joined) return;
    if (c.samples.length >= c.want) {
      this._finishClockSync();
      return;
    }
    const t0 = Date.now();
    c.inflight = { t0 };
    this._raw({ type: "clock", t0 });
    // A lost sample does not stall the sync.
    this._timers.clock = setTimeout(() => {
      if (this._clock === c && c.inflight && c.inflight.t0 === t0) {
        c.want -= 1;
        c.inflight = null;
        this._sendClockSample();
      }
    }, 3000);
  }

  _onClock(msg) {
    const c = this._clock;
    const t3 = Date.now();
    if (!c || !c.inflight || msg.t0 !== c.inflight.t0) return;
    clearTimeout(this._timers.clock);
    c.inflight = null;
    const { t0, t1, t2 } = msg;
    if ([t1, t2].every((v) => typeof v === "number")) {
      c.samples.push({ offset: ((t1 - t0) + (t2 - t3)) / 2, rtt: (t3 - t0) - (t2 - t1) });
    }
    this._sendClockSample();
  }

  _finishClockSync() {
    const c = this._clock;
    this._clock = null;
    if (!c || c.samples.length === 0) return;
    const best = c.samples.reduce((a, b) => (b.rtt < a.rtt ? b : a));
    this.offset = best.offset;
    this.rtt = best.rtt;
    this.clockSynced = true;
    this._emit("clock", { type: "clock_sync", offset: this.offset, rtt: this.rtt, samples: c.samples.length });
    this._changed("clock");
    // Drift check every five minutes.
    clearTimeout(this._timers.resync);
    this._timers.resync = setTimeout(() => { if (this._joined) this._startClockSync(); }, 300000);
  }

  // ---------------------------------------------------------------------------------------------
  // inbound

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
    this._callOnEvent(detail);
  }

  _callOnEvent(detail) {
    if (this.onEvent) {
      try { this.onEvent(detail, this); } catch (err) { console.error("livesale onEvent handler failed", err); }
    }
  }

  _changed(cause) {
    this._armHoldExpiry();
    this.dispatchEvent(new CustomEvent("change", { detail: { type: "change", cause } }));
  }

  // A hold not paid by its pay_by is gone (the server's reaper returns the units): mark it `expired`
  // at that instant (server time) and emit `hold_expired`, so a page can say so even while offline.
  // A hold whose payment is in flight is left to the pay_result.
  _armHoldExpiry() {
    const now = this.serverNow();
    let next = Infinity;
    const expired = [];
    for (const h of this.holds.values()) {
      if (h.status !== "held" || !h.pay_by || this._payPending(h.hold)) continue;
      if (h.pay_by <= now) expired.push(h);
      else next = Math.min(next, h.pay_by);
    }
    for (const h of expired) this._expireHold(h, "pay_by");
    if (expired.length) this._changed("hold_expired"); // re-arms for the next one
    else if (next !== this._holdTimerAt) {
      clearTimeout(this._timers.holds);
      this._holdTimerAt = next;
      if (next !== Infinity) {
        this._timers.holds = setTimeout(() => { this._holdTimerAt = null; this._armHoldExpiry(); },
          Math.min(2 ** 31 - 1, Math.max(0, next - now)));
      }
    }
  }

  _payPending(hold) {
    for (const p of this._pending.values()) if (p.msg.type === "pay" && p.msg.hold === hold) return true;
    return false;
  }

  _expireHold(h, why) {
    const cur = { ...h, status: "expired" };
    this.holds.set(h.hold, cur);
    this._emit("hold_expired", { type: "hold_expired", hold: h.hold, sale: h.sale, qty: h.qty, pay_by: h.pay_by, why });
  }

  _handle(msg) {
    const type = msg.type;
    if (typeof msg.seq === "number" && !UNSEQUENCED.has(type)) {
      if (this.epoch !== null && msg.epoch !== undefined && String(msg.epoch) !== String(this.epoch)) {
        // The room's history was lost: start over from a snapshot.
        this._rejoinFresh();
        return;
      }
      if (this.seq !== null) {
        if (msg.seq <= this.seq) return;           // duplicate (e.g. replayed twice)
        if (msg.seq > this.seq + 1) {              // gap: never apply out of order
          this._rejoinFresh();
          return;
        }
      }
      this.seq = msg.seq;
      if (msg.epoch !== undefined) this.epoch = String(msg.epoch);
    }

    // order_confirmed is at least once: a copy of an order already known changes nothing and emits
    // nothing (it is still in the raw `message` stream).
    if (type === "order_confirmed" && msg.order && msg.order.order_id !== undefined && this._orderKnown(msg.order.order_id)) {
      this._mergeOrder(msg.order);
      this.dispatchEvent(new CustomEvent("message", { detail: msg }));
      return;
    }

    switch (type) {
      case "hello":
        this.session = msg.session;
        this.limits = msg.limits || null;
        if (typeof msg.server_time === "number" && !this.clockSynced) this.offset = msg.server_time - Date.now();
        break;
      case "snapshot": this._applySnapshot(msg); break;
      case "resumed":
        this.epoch = String(msg.epoch);
        this.seq = msg.from_seq;
        this._afterJoin(msg);
        break;
      case "clock": this._onClock(msg); break;
      case "pong": break;
      case "tick": this._applyTick(msg); break;
      case EventType.ROOM_STATUS: if (this.room) this.room = { ...this.room, status: msg.status }; break;
      case EventType.ROOM_UPDATED: if (msg.room) this.room = { ...(this.room || {}), ...msg.room }; break;
      case EventType.PRODUCT_ADDED: if (msg.product) this._upsertProduct(msg.product); break;
      case EventType.PRODUCT_PINNED:
        this.pinned = msg.product || null;
        if (msg.product) this._upsertProduct(msg.product);
        break;
      case EventType.PRODUCT_UNPINNED: this.pinned = null; break;
      case EventType.SALE_SCHEDULED:
      case EventType.SALE_OPEN:
        if (msg.sale) this._upsertSale(msg.sale);
        break;
      case EventType.SALE_SOLD_OUT: this._patchSale(msg.sale_id, { state: "sold_out", units_left: 0 }); break;
      case EventType.SALE_CLOSED: this._patchSale(msg.sale_id, { state: "closed", closed_reason: msg.reason }); break;
      case EventType.ANNOUNCEMENT:
        this.announcements.push({ text: msg.text, ts: msg.ts, seq: msg.seq });
        if (this.announcements.length > 20) this.announcements.splice(0, this.announcements.length - 20);
        break;
      case EventType.COMMENT_HIDDEN:
        this.hiddenComments.add(msg.comment);
        this.comments = this.comments.filter((c) => c.id !== msg.comment);
        break;
      case EventType.USER_MUTED:
        this.muted.add(msg.user);
        this.comments = this.comments.filter((c) => c.user !== msg.user);
        break;
      case "buy_result": this._onBuyResult(msg); break;
      case "pay_result": this._onPayResult(msg); break;
      case "release_result": this._onReleaseResult(msg); break;
      case "order_confirmed": this._onOrderConfirmed(msg); break;
      case "order_refunded": this._onOrderRefunded(msg); break;
      case "payment_started":
        // nothing left to pay (a draw's prize at price 0, a coupon of 100%): confirmed without a provider
        if (msg.status === "confirmed" && msg.hold) {
          const h = this.holds.get(msg.hold);
          this.holds.set(msg.hold, { ...(h || { hold: msg.hold }), status: "confirmed", order: msg.order_id || msg.hold });
        }
        break;
      case EventType.TEAMS_SET:
        this.teams = { teams: msg.teams || [], allow_switch: msg.allow_switch, switch_cooldown_s: msg.switch_cooldown_s };
        break;
      case EventType.POLL_OPENED:
      case EventType.POLL_CLOSED:
        if (msg.poll?.poll_id) this._upsert(this.polls, "poll_id", msg.poll);
        break;
      case EventType.COUPON_DROP:
      case EventType.COUPON_DROP_ENDED:
        if (msg.drop?.drop_id) this._upsert(this.drops, "drop_id", msg.drop);
        break;
      case EventType.DRAW_OPENED:
      case EventType.DRAW_RESULT:
        if (msg.draw?.draw_id) this._upsert(this.draws, "draw_id", msg.draw);
        break;
      case EventType.DRAW_REDRAWN:
        if (msg.draw?.draw_id) {
          const prev = this.draws.get(msg.draw.draw_id);
          const rounds = (msg.draw.redraws || prev?.redraws || []).slice();
          if (!rounds.some((r) => r.round === msg.round)) rounds.push({ round: msg.round, replaced: msg.replaced, added: msg.added });
          this._upsert(this.draws, "draw_id", { ...msg.draw, redraws: rounds });
        }
        break;
      case "team_joined":
        if (msg.team) { this.myTeam = msg.team; this.teamSwitchAt = msg.switch_at ?? null; }
        break;
      case "vote_result": this._onVoteResult(msg); break;
      case "claim_result": this._onClaimResult(msg); break;
      case "entry_result":
        if (msg.draw && msg.code !== "RATE_LIMITED") {
          const prev = this.myEntries.get(msg.draw);
          // ALREADY_ENTERED after an ENTERED keeps the entry id the first answer gave
          this.myEntries.set(msg.draw, { ...(prev?.entry_id ? { entry_id: prev.entry_id } : {}), code: msg.code,
            ...(msg.entry_id ? { entry_id: msg.entry_id } : {}), message: msg.message, at: Date.now() });
        }
        break;
      case "draw_won": this._onDrawWon(msg); break;
      case "shelf":  // this viewer's order of the show's products (docs/PROTOCOL.md, Each viewer their own shelf)
        if (Array.isArray(msg.order) && msg.room === this.roomId) this.shelf = { order: msg.order, personal: !!msg.personal };
        break;
      case "notice":  // a reminder fired or an audience notice (kept, newest first, at most 20)
        if (msg.notice) this.notices = [msg.notice, ...this.notices.filter((n) => n.notice_id !== msg.notice.notice_id)].slice(0, 20);
        break;
      case "ok": break;
      case "error": this._onError(msg); break;
      default: break; // unknown types are ignored (forward compatibility)
    }

    this._settle(msg);
    this.dispatchEvent(new CustomEvent("message", { detail: msg }));
    // A server `error` reaches onEvent once: as the `error` event emitted by _onError (same fields + request).
    if (type !== "error") this._callOnEvent(msg);
    // Event names the client uses for its own events keep one meaning: a raw `clock` sample or a raw
    // `error` message is not re-dispatched under that name (both are still in `message`).
    if (!LOCAL_EVENTS.has(type)) this.dispatchEvent(new CustomEvent(type, { detail: msg }));
    if (type !== "pong" && type !== "hello") this._changed(type);
  }

  _rejoinFresh() {
    this.epoch = null;
    this.seq = null;
    this._joined = false;
    this._sendJoin();
  }

  _applySnapshot(msg) {
    this._resetRoomState();
    this.room = msg.room || null;
    this.pinned = msg.pinned || null;
    this.products = Array.isArray(msg.products) ? msg.products.slice() : [];
    for (const s of msg.sales || []) this.sales.set(s.sale_id, { ...s });
    this.comments = Array.isArray(msg.comments) ? msg.comments.slice(-100) : [];
    this.viewers = msg.viewers ?? 0;
    this.likes = msg.likes ?? 0;
    this.epoch = msg.epoch !== undefined && msg.epoch !== null ? String(msg.epoch) : null;
    this.seq = msg.seq ?? null;
    this.you = msg.you || null;
    if (msg.announcement && msg.announcement.text) this.announcements.push({ ...msg.announcement });
    this._applyInteractionSnapshot(msg);
    this._afterJoin(msg);
  }

  _afterJoin(msg) {
    const first = !this._everJoined;
    this._joined = true;
    this._everJoined = true;
    this.attempt = 0;
    this.fatal = null;
    this._setState("open", { recovered: !!msg.recovered, first });
    // Flush what was waiting, then re-send idempotent requests that lost their socket.
    const out = this._outbox;
    this._outbox = [];
    for (const m of out) this._raw(m);
    for (const p of this._pending.values()) {
      if (!p.sent) p.sent = this._raw(p.msg);
    }
    // Measure the clock once per socket (a server-initiated resync snapshot does not redo it).
    if (this._clockSocket !== this._ws) {
      this._clockSocket = this._ws;
      this._startClockSync();
    }
    if (this._ordersFloor === null) this._ordersFloor = typeof msg.server_time === "number" ? msg.server_time : this.serverNow();
    this.dispatchEvent(new CustomEvent("joined", { detail: msg }));
    // order_confirmed is not replayed on resume, and a gateway that lost its Redis subscription (it
    // then sends an unasked snapshot) may have missed one: fetch what settled meanwhile.
    this._startOrderCatchUp();
  }

  _applyTick(msg) {
    if (typeof msg.viewers === "number") this.viewers = msg.viewers;
    if (typeof msg.likes === "number") this.likes = msg.likes;
    if (msg.units && typeof msg.units === "object") {
      for (const [id, left] of Object.entries(msg.units)) {
        const s = this.sales.get(id);
        if (s) this.sales.set(id, { ...s, units_left: left });
      }
    }
    if (Array.isArray(msg.comments) && msg.comments.length) {
      const seen = new Set(this.comments.map((c) => c.id));
      for (const c of msg.comments) {
        if (!seen.has(c.id) && !this.hiddenComments.has(c.id) && !this.muted.has(c.user)) this.comments.push(c);
      }
      if (this.comments.length > 100) this.comments.splice(0, this.comments.length - 100);
    }
    if (Array.isArray(msg.bought) && msg.bought.length) {
      this.bought.push(...msg.bought);
      if (this.bought.length > 30) this.bought.splice(0, this.bought.length - 30);
    }
    // interaction live counts (ambient lane): the leaderboard, and counts per poll, drop and draw
    if (Array.isArray(msg.teams)) this.leaderboard = msg.teams.slice();
    for (const [field, map] of [["polls", this.polls], ["drops", this.drops], ["draws", this.draws]]) {
      const counts = msg[field];
      if (!counts || typeof counts !== "object") continue;
      for (const [id, c] of Object.entries(counts)) {
        const cur = map.get(id);
        if (cur && c && typeof c === "object") map.set(id, { ...cur, ...c });
      }
    }
  }

  _applyInteractionSnapshot(msg) {
    const you = msg.you || {};
    if ("team" in you) this.myTeam = you.team ?? null;
    this.teams = msg.teams && typeof msg.teams === "object" ? msg.teams : null;
    this.leaderboard = Array.isArray(msg.leaderboard) ? msg.leaderboard.slice() : [];
    for (const [field, map, key] of [["polls", this.polls, "poll_id"], ["drops", this.drops, "drop_id"],
      ["draws", this.draws, "draw_id"]]) {
      for (const o of Array.isArray(msg[field]) ? msg[field] : []) if (o && o[key]) map.set(o[key], { ...o });
    }
  }

  _upsert(map, key, obj) {
    map.set(obj[key], { ...(map.get(obj[key]) || {}), ...obj });
  }

  _onVoteResult(msg) {
    const poll = msg.poll;
    if (!poll) return;
    if ((msg.code === "VOTED" || msg.code === "ALREADY_VOTED") && typeof msg.option === "number") this.myVotes.set(poll, msg.option);
    const cur = this.polls.get(poll);
    if (cur && Array.isArray(msg.counts)) this.polls.set(poll, { ...cur, counts: msg.counts, total: msg.total ?? cur.total });
    if (cur && msg.code === "CLOSED" && cur.state === "open") this.polls.set(poll, { ...this.polls.get(poll), state: "closed" });
  }

  _onClaimResult(msg) {
    const drop = msg.drop;
    if (!drop || msg.code === "RATE_LIMITED") return;
    this.myClaims.set(drop, { code: msg.code, coupon: msg.coupon || null, left: msg.left, at: Date.now() });
    if (msg.coupon && typeof msg.coupon === "object") this._putCoupon(msg.coupon);
    const cur = this.drops.get(drop);
    if (cur && typeof msg.left === "number") this.drops.set(drop, { ...cur, left: msg.left });
  }

  _putCoupon(c) {
    if (!c?.drop_id) return;
    this.coupons.set(c.drop_id, { ...(this.coupons.get(c.drop_id) || {}), ...c });
  }

  /** You won a draw: the prize is a hold at price 0 (pay it before pay_by) or a coupon in your wallet. */
  _onDrawWon(msg) {
    if (!msg.draw_id) return;
    this.wins.set(msg.draw_id, { ...msg });
    const entry = this.myEntries.get(msg.draw_id);
    if (msg.entry_id && !entry?.entry_id) this.myEntries.set(msg.draw_id, { ...(entry || {}), code: entry?.code || "ENTERED", entry_id: msg.entry_id });
    const holdId = typeof msg.hold === "object" && msg.hold ? msg.hold.hold_id ?? msg.hold.hold : msg.hold;
    if (holdId && !this.holds.has(holdId)) {
      const h = typeof msg.hold === "object" && msg.hold ? msg.hold : {};
      this.holds.set(holdId, { hold: holdId, sale: h.sale_id ?? msg.sale_id ?? null, qty: h.qty ?? msg.prize?.units ?? 1,
        pay_by: msg.pay_by ?? h.pay_by, status: "held", prize: true, draw: msg.draw_id, amount: 0 });
    }
    if (msg.coupon && typeof msg.coupon === "object") this._putCoupon(msg.coupon);
  }

  _upsertProduct(p) {
    const i = this.products.findIndex((x) => x.product_id === p.product_id);
    if (i >= 0) this.products[i] = { ...this.products[i], ...p };
    else this.products.push(p);
  }

  _upsertSale(sale) {
    const prev = this.sales.get(sale.sale_id);
    this.sales.set(sale.sale_id, { ...(prev || {}), ...sale });
  }

  _patchSale(id, patch) {
    const s = this.sales.get(id);
    if (s) this.sales.set(id, { ...s, ...patch });
  }

  _onBuyResult(msg) {
    if (typeof msg.units_left === "number" && msg.sale) this._patchSale(msg.sale, { units_left: msg.units_left });
    if (msg.code === "RESERVED" && msg.hold) {
      const prev = this.holds.get(msg.hold);
      if (!prev || prev.status === "held") {
        this.holds.set(msg.hold, { hold: msg.hold, sale: msg.sale, qty: msg.qty ?? 1, pay_by: msg.pay_by, status: "held" });
      }
    }
  }

  _onPayResult(msg) {
    const h = this.holds.get(msg.hold);
    if (msg.code === "CONFIRMED" || msg.code === "ALREADY_CONFIRMED") {
      this.holds.set(msg.hold, { ...(h || { hold: msg.hold }), status: "confirmed", order: msg.order || msg.hold });
    } else if (msg.code === "EXPIRED" && h) {
      if (h.status === "held") this._expireHold(h, "pay_result");
      else this.holds.set(msg.hold, { ...h, status: "expired" });
    }
  }

  _onReleaseResult(msg) {
    const h = this.holds.get(msg.hold);
    if (h && (msg.code === "RELEASED" || msg.code === "NOT_HELD") && h.status === "held") {
      if (msg.code === "RELEASED") this.holds.set(msg.hold, { ...h, status: "released" });
      else this._expireHold(h, "release_result");
    }
  }

  _onOrderConfirmed(msg) {
    const o = msg.order;
    if (!o) return;
    this._mergeOrder(o);
    const h = this.holds.get(o.order_id);
    this.holds.set(o.order_id, { ...(h || { hold: o.order_id, sale: o.sale_id, qty: o.qty }), status: "confirmed", order: o.order_id, settled: true });
  }

  /** A settled order of ours was refunded by the host or the pool's merchant: it stays in `orders`
   *  with `status: "refunded"` (and the refund's `refunded_at`, `reason`, `restock`). */
  _onOrderRefunded(msg) {
    if (!msg.order_id) return;
    const i = this.orders.findIndex((x) => x.order_id === msg.order_id);
    if (i >= 0) this.orders[i] = { ...this.orders[i], status: "refunded", refunded_at: msg.refunded_at, reason: msg.reason,
      restock: msg.restock };
    const h = this.holds.get(msg.order_id);
    if (h) this.holds.set(msg.order_id, { ...h, refunded: true });
  }

  /** Whether this order was already delivered (live or by a catch-up, or a hold marked settled,
   *  e.g. restored by a page after a reload). */
  _orderKnown(orderId) {
    return this.orders.some((x) => x.order_id === orderId) || !!this.holds.get(orderId)?.settled;
  }

  /** Add an order to `orders`, or update the fields of the one with its order_id. */
  _mergeOrder(o) {
    const i = this.orders.findIndex((x) => x.order_id === o.order_id);
    if (i >= 0) this.orders[i] = { ...this.orders[i], ...o };
    else this.orders.push({ ...o });
    if (this.orders.length > 500) this.orders.splice(0, this.orders.length - 500);
  }

  // ---------------------------------------------------------------------------------------------
  // order catch-up: GET /api/me/orders after each join (docs/PROTOCOL.md, `order_confirmed`)

  /** The newest settled_at held (orders of every room), or the first join's server time. */
  _ordersSince() {
    let newest = null;
    for (const o of this.orders) if (typeof o.settled_at === "number" && (newest === null || o.settled_at > newest)) newest = o.settled_at;
    if (this._ordersSeen !== null && (newest === null || this._ordersSeen > newest)) newest = this._ordersSeen;
    const base = newest ?? this._ordersFloor ?? this.serverNow();
    return Math.max(0, Math.floor(base - ORDERS_MARGIN_MS));
  }

  _startOrderCatchUp() {
    clearTimeout(this._timers.orders);
    this._timers.orders = null;
    if (!this.catchUpOrders || !this.fetchImpl || !this.apiUrl || !this.token) return;
    if (tokenClaims(this.token)?.role !== "viewer") return;
    if (this._ordersRun) { this._ordersAgain = true; return; }
    this._ordersRun = this._catchUpOrders()
      .catch((err) => this._orderCatchUpFailed(err))
      .finally(() => {
        this._ordersRun = null;
        if (this._ordersAgain && this._joined && !this._closing) {
          this._ordersAgain = false;
          this._startOrderCatchUp();
        }
        this._ordersAgain = false;
      });
  }

  async _catchUpOrders() {
    const token = this.token;
    const since = this._ordersSince();
    this.ordersSync = { ...this.ordersSync, state: "running", since };
    let cursor = null;
    let recovered = 0;
    let pages = 0;
    for (;;) {
      const q = new URLSearchParams({ since: String(since), limit: String(this.ordersPageLimit) });
      if (cursor) q.set("cursor", cursor);
      const body = await this._fetchJson(`${this.apiUrl}/api/me/orders?${q}`, token);
      if (this._closing || token !== this.token) return; // closed, or another user now: drop the answer
      const orders = Array.isArray(body?.orders) ? body.orders : [];
      for (const o of orders) {
        if (!o || o.order_id === undefined) continue;
        if (typeof o.settled_at === "number" && (this._ordersSeen === null || o.settled_at > this._ordersSeen)) this._ordersSeen = o.settled_at;
        // order_confirmed goes to the buyer's sockets in the sale's room: the same here.
        if (o.room_id !== undefined && o.room_id !== null && o.room_id !== this.roomId) continue;
        if (this._orderKnown(o.order_id)) { this._mergeOrder(o); continue; }
        recovered += 1;
        this._deliverRecoveredOrder(o);
      }
      pages += 1;
      cursor = typeof body?.next === "string" && body.next ? body.next : null;
      if (!cursor) break;
      if (pages >= this.ordersMaxPages) {
        // More than a few pages: the rest is fetched by the next run (from the newest settled_at now held).
        this.ordersSync = { state: "ok", at: Date.now(), attempt: 0, recovered: this.ordersSync.recovered + recovered, since, more: true };
        clearTimeout(this._timers.orders);
        this._timers.orders = setTimeout(() => { if (this._joined) this._startOrderCatchUp(); }, 1000);
        return;
      }
    }
    this.ordersSync = { state: "ok", at: Date.now(), attempt: 0, recovered: this.ordersSync.recovered + recovered, since };
  }

  async _fetchJson(url, token) {
    const ctrl = typeof AbortController === "function" ? new AbortController() : null;
    const timer = ctrl ? setTimeout(() => ctrl.abort(), this.requestTimeoutMs) : null;
    try {
      const res = await this.fetchImpl(url, {
        headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
        cache: "no-store",
        ...(ctrl ? { signal: ctrl.signal } : {}),
      });
      if (!res.ok) throw new LiveSaleError(`HTTP_${res.status}`, `GET /api/me/orders answered ${res.status}`);
      return await res.json();
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The caller's holds, orders and totals (GET /api/me/orders, every room and channel), for a "My
   * orders" view. Needs a token (a viewer's, or a host's for its own user); uses the client's token
   * and API base URL. Follows `next` for up to `maxPages` pages of `limit` orders (oldest first).
   * Resolves with the parsed reply: `{orders, next, holds, totals}` (`orders` of every page read,
   * `next` null when they are all there; `holds` and `totals` from the last page). Orders this client
   * already holds in `orders` take the reply's fields (a refund made while the page was away reads
   * `status: "refunded"` there too; a refund already known is never undone), then `change` is emitted.
   * Rejects with a LiveSaleError: `UNAUTHORIZED` without a token, `HTTP_<status>` for an error answer,
   * `STALE` when the token changed while it ran.
   */
  async myOrders({ since = 0, limit = 200, cursor = null, maxPages = 1 } = {}) {
    if (!this.fetchImpl || !this.apiUrl) throw new LiveSaleError("UNAVAILABLE", "no fetch() or HTTP API URL");
    const token = this.token;
    if (!token) throw new LiveSaleError("UNAUTHORIZED", "myOrders() needs a token");
    const orders = [];
    let body = null;
    let next = cursor || null;
    let pages = 0;
    do {
      const q = new URLSearchParams({
        since: String(Math.max(0, Math.floor(Number(since) || 0))),
        limit: String(Math.max(1, Math.min(200, Math.floor(limit) || 200))),
      });
      if (next) q.set("cursor", next);
      body = await this._fetchJson(`${this.apiUrl}/api/me/orders?${q}`, token);
      if (token !== this.token) throw new LiveSaleError("STALE", "the token changed while the orders were read");
      if (Array.isArray(body?.orders)) orders.push(...body.orders.filter((o) => o && o.order_id !== undefined));
      pages += 1;
      next = typeof body?.next === "string" && body.next ? body.next : null;
    } while (next && pages < Math.max(1, maxPages));
    let changed = false;
    for (const o of orders) {
      if (!this._orderKnown(o.order_id)) continue;
      const cur = this.orders.find((x) => x.order_id === o.order_id);
      this._mergeOrder(cur?.status === "refunded" ? { ...o, status: "refunded" } : o);
      if (o.status === "refunded") {
        const h = this.holds.get(o.order_id);
        if (h && !h.refunded) this.holds.set(o.order_id, { ...h, refunded: true });
      }
      changed = true;
    }
    if (changed) this._changed("my_orders");
    return {
      orders, next,
      holds: Array.isArray(body?.holds) ? body.holds : [],
      totals: body?.totals && typeof body.totals === "object" ? body.totals : {},
    };
  }

  /**
   * Save a product of a show for later (`on`, the default: `PUT /api/me/saved/{room}/{product}`) or
   * take it out again (`on = false`: `DELETE`), with the client's token and API base URL. No stock is
   * taken: it is an interest signal (the host's dashboard counts it in `saved`). `room` defaults to the
   * client's room. Resolves with `{room_id, product_id, saved: true, fresh}` (`fresh` false when it was
   * saved before) or `{room_id, product_id, saved: false, removed}`. Rejects with a LiveSaleError:
   * `UNAUTHORIZED` without a token, `HTTP_<status>` for an error answer (404: no such room or product;
   * 409: too many saved products; the server's `{error}` in `.reply`), `TIMEOUT`, `NETWORK`, `STALE`
   * when the token changed while it ran.
   */
  async saveProduct(productId, on = true, { room = this.roomId } = {}) {
    if (!this.fetchImpl || !this.apiUrl) throw new LiveSaleError("UNAVAILABLE", "no fetch() or HTTP API URL");
    const token = this.token;
    if (!token) throw new LiveSaleError("UNAUTHORIZED", "saveProduct() needs a token");
    if (!productId || !room) throw new LiveSaleError("INVALID", "saveProduct() needs a product id and a room");
    const path = `/api/me/saved/${encodeURIComponent(room)}/${encodeURIComponent(productId)}`;
    const { status, body } = await this._apiCall(on ? "PUT" : "DELETE", path, token);
    if (token !== this.token) throw new LiveSaleError("STALE", "the token changed while the product was saved");
    return on
      ? { room_id: room, product_id: productId, saved: true, fresh: status === 201 }
      : { room_id: room, product_id: productId, saved: false, removed: body?.removed === true };
  }

  /**
   * The products you saved for later (`GET /api/me/saved`), newest first, as
   * `[{room_id, product_id, product, saved_at}]` (`product`: the product's fields as the server sent
   * them); only those of one room with `{room}` (e.g. `{room: client.roomId}`), else every room's.
   * Same token, base URL and errors as saveProduct().
   */
  async savedProducts({ room = null } = {}) {
    if (!this.fetchImpl || !this.apiUrl) throw new LiveSaleError("UNAVAILABLE", "no fetch() or HTTP API URL");
    const token = this.token;
    if (!token) throw new LiveSaleError("UNAUTHORIZED", "savedProducts() needs a token");
    const { body } = await this._apiCall("GET", "/api/me/saved", token);
    if (token !== this.token) throw new LiveSaleError("STALE", "the token changed while the saved products were read");
    const out = [];
    for (const item of Array.isArray(body?.saved) ? body.saved : []) {
      if (!item || (room && item.room_id !== room)) continue;
      const product = item.product && typeof item.product === "object" ? item.product : null;
      const productId = product ? product.product_id : item.product ?? item.product_id;
      if (productId === undefined || productId === null) continue;
      out.push({ room_id: item.room_id, product_id: productId, product, saved_at: item.saved_at ?? null });
    }
    return out;
  }

  /** One HTTP API call with a bearer token (none when `token` is null): `{status, body}` (the parsed JSON answer), or a
   *  LiveSaleError (`HTTP_<status>` with the server's answer in `.reply`, `TIMEOUT`, `NETWORK`). */
  async _apiCall(method, path, token) {
    const ctrl = typeof AbortController === "function" ? new AbortController() : null;
    const timer = ctrl ? setTimeout(() => ctrl.abort(), this.requestTimeoutMs) : null;
    let res;
    try {
      res = await this.fetchImpl(`${this.apiUrl}${path}`, {
        method,
        headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), Accept: "application/json" },
        cache: "no-store",
        ...(ctrl ? { signal: ctrl.signal } : {}),
      });
      const body = await res.json().catch(() => null);
      if (!res.ok) {
        throw new LiveSaleError(`HTTP_${res.status}`, body?.error?.message || `${method} ${path} answered ${res.status}`, body);
      }
      return { status: res.status, body };
    } catch (err) {
      if (err instanceof LiveSaleError) throw err;
      if (err?.name === "AbortError") throw new LiveSaleError("TIMEOUT", `no answer to ${method} ${path} within ${this.requestTimeoutMs} ms`);
      throw new LiveSaleError("NETWORK", String(err?.message || err));
    } finally {
      clearTimeout(timer);
    }
  }

  /** A failed catch-up is never thrown at the page: it is retried with backoff while joined, and
   *  again after the next join. */
  _orderCatchUpFailed(err) {
    const attempt = (this.ordersSync.attempt || 0) + 1;
    this.ordersSync = { ...this.ordersSync, state: "failed", at: Date.now(), attempt, error: String(err?.message || err) };
    if (this._closing) return;
    const base = ORDERS_BACKOFF_S[Math.min(attempt, ORDERS_BACKOFF_S.length) - 1] * 1000;
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    clearTimeout(this._timers.orders);
    this._timers.orders = setTimeout(() => {
      this._timers.orders = null;
      if (this._joined) this._startOrderCatchUp(); // otherwise the next join runs it
    }, delay);
  }

  /** An order found by the catch-up: applied and emitted exactly like a live `order_confirmed`
   *  (the `order_confirmed` event and onEvent, then `change`), with `recovered: true`. */
  _deliverRecoveredOrder(order) {
    const msg = { type: "order_confirmed", order, recovered: true };
    this._onOrderConfirmed(msg);
    this._callOnEvent(msg);
    this.dispatchEvent(new CustomEvent("order_confirmed", { detail: msg }));
    this._changed("order_confirmed");
  }

  _onError(msg) {
    const ff = msg.rid ? this._fireAndForget.get(msg.rid) : null;
    if (ff) this._fireAndForget.delete(msg.rid);
    const pendingJoin = !this._joined && !msg.rid && ["NOT_FOUND", "UNAUTHORIZED", "FORBIDDEN", "INVALID", "BAD_MESSAGE"].includes(msg.code);
    const request = ff ? ff.type : (this._pending.get(msg.rid)?.msg.type ?? (pendingJoin ? "join" : undefined));
    this._emit("error", { ...msg, type: "error", code: msg.code, message: msg.message, rid: msg.rid, request });
    if (!this._joined && !msg.rid && msg.code === "RATE_LIMITED") {
      // Too many joins from this address (LIVESALE_JOIN_RATE_PER_ADDR): join again in 1-2 s.
      const ws = this._ws;
      setTimeout(() => { if (this._ws === ws && !this._joined) this._sendJoin(); }, 1000 + Math.random() * 1000);
      return;
    }
    if (pendingJoin) {
      // The server refused the join (unknown room, bad token): stop instead of retrying forever.
      this.fatal = { code: msg.code, message: msg.message };
      this._closing = false;
      const ws = this._ws;
      this._ws = null;
      this._stopPing();
      if (ws) { try { ws.close(1000, "join refused"); } catch { /* ignore */ } }
      this._failPending(new LiveSaleError(msg.code, msg.message, msg), () => true);
      this._setState("closed", { code: msg.code, message: msg.message });
    }
  }

  /** Resolve or reject the request this message answers (matched by rid). */
  _settle(msg) {
    if (!msg.rid || !this._pending.has(msg.rid)) return;
    const p = this._pending.get(msg.rid);
    if (msg.type === "error") {
      this._pending.delete(msg.rid);
      clearTimeout(p.timer);
      p.reject(new LiveSaleError(msg.code, msg.message, msg));
    } else if (msg.type === p.reply) {
      this._pending.delete(msg.rid);
      clearTimeout(p.timer);
      p.resolve(msg);
    }
  }

  /** Reject pending requests matching `predicate`; the others are re-sent after the next join. */
  _failPending(err, predicate) {
    for (const [rid, p] of this._pending) {
      if (predicate(p)) {
        this._pending.delete(rid);
        clearTimeout(p.timer);
        p.reject(err);
      } else {
        p.sent = false;
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // outbound

  /** Send a request and wait for its reply (matched by rid). Queued until joined. */
  request(type, fields = {}, { reply = REPLY_OF[type] || "ok", timeoutMs = this.requestTimeoutMs } = {}) {
    const rid = fields.rid && RID_RE.test(fields.rid) ? fields.rid : newRid(type.slice(0, 8));
    const msg = { type, ...fields, rid };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(rid);
        reject(new LiveSaleError("TIMEOUT", `no reply to ${type} within ${timeoutMs} ms`));
      }, timeoutMs);
      // Sent now if joined, otherwise right after the next join.
      const sent = this._joined && this._raw(msg);
      this._pending.set(rid, { msg, resolve, reject, timer, reply, sent });
    });
  }

  /** Send a message with no reply; queued until joined. */
  send(type, fields = {}) {
    this._send({ type, ...fields });
  }

  _send(msg) {
    if (this._joined && this._raw(msg)) return;
    // Fire-and-forget messages (comments, likes) wait for the next join.
    this._outbox.push(msg);
    if (this._outbox.length > 200) this._outbox.shift();
  }

  // viewer actions -------------------------------------------------------------------------------

  /** Reserve `qty` units of a sale. Resolves with the buy_result (check `.code`: RESERVED, SOLD_OUT, ...). */
  buy(saleId, qty = 1, { rid } = {}) {
    return this.request("buy", { sale: saleId, qty, ...(rid ? { rid } : {}) });
  }

  /** Pay a hold (demo payment). Resolves with the pay_result (`.code` CONFIRMED, EXPIRED, ...).
   *  `{coupon}`: a drop id of a coupon in your wallet; the pay_result then carries `discount`, `total`
   *  and `coupon`, or a refusal code (COUPON_NOT_APPLICABLE, COUPON_USED, COUPON_EXPIRED, NOT_FOUND). */
  pay(hold, { coupon } = {}) {
    return this.request("pay", { hold: typeof hold === "object" ? hold.hold : hold, ...(coupon ? { coupon } : {}) });
  }

  /** The server's payment mode (hello.limits.payments): "instant" (pay with pay()) or a provider's
   *  name such as "sandbox" (pay with checkout()). */
  get paymentMode() {
    return (this.limits && this.limits.payments) || "instant";
  }

  /** Start paying a hold through the server's payment provider. Resolves with payment_started
   *  ({payment_id, amount, currency, redirect_url?, client_secret?}): open redirect_url (or use the
   *  client secret); the hold becomes confirmed when the provider's webhook arrives (order_confirmed).
   *  Rejects with a LiveSaleError (`.code` NO_PROVIDER, EXPIRED, ALREADY_CONFIRMED, ...). */
  checkout(hold, { coupon } = {}) {
    return this.request("checkout", { hold: typeof hold === "object" ? hold.hold : hold, ...(coupon ? { coupon } : {}) });
  }

  /** Give a hold back before its pay-by time. Resolves with the release_result. */
  release(hold) {
    return this.request("release", { hold: typeof hold === "object" ? hold.hold : hold });
  }

  /** Post a comment (1-300 characters). Errors (MUTED, RATE_LIMITED) arrive as `error` events. */
  comment(text) {
    const rid = newRid("c");
    this._fireAndForget.set(rid, { type: "comment", at: Date.now() });
    if (this._fireAndForget.size > 50) this._fireAndForget.delete(this._fireAndForget.keys().next().value);
    this._send({ type: "comment", text: String(text).slice(0, 300), rid });
    return rid;
  }

  /** Add `n` likes (1-50). The aggregated count arrives in ticks. */
  like(n = 1) {
    this._send({ type: "like", n: Math.max(1, Math.min(50, Math.floor(n))) });
  }

  // interaction (docs/PROTOCOL.md Interaction) ---------------------------------------------------

  /** Join a fan team of this room. Resolves with team_joined ({team, joined_at, switch_at}); rejects
   *  with a LiveSaleError: NOT_FOUND, TEAM_LOCKED (switching is off), TEAM_COOLDOWN (the message
   *  says when), RATE_LIMITED. */
  joinTeam(team) {
    return this.request("join_team", { team });
  }

  /** Vote in a poll (`option`: 0-based). Resolves with vote_result: `.code` VOTED, ALREADY_VOTED
   *  (`.option` is the vote that counted), CLOSED, NOT_FOUND, INVALID, RATE_LIMITED. */
  vote(poll, option) {
    return this.request("vote", { poll, option: Math.floor(Number(option)) });
  }

  /** Claim a coupon of a drop. Resolves with claim_result: `.code` CLAIMED (`.coupon` is yours, now
   *  in `coupons`), ALREADY_CLAIMED (`.coupon`: the one you hold), ALL_CLAIMED, NOT_STARTED, ENDED,
   *  TEAM_ONLY, NOT_FOUND, RATE_LIMITED; `.left`: how many are left. */
  claimCoupon(drop, { rid } = {}) {
    return this.request("claim_coupon", { drop, ...(rid ? { rid } : {}) });
  }

  /** Enter a lucky draw. Resolves with entry_result: `.code` ENTERED (`.entry_id`: your masked id in
   *  the published entrant list), ALREADY_ENTERED, NOT_ELIGIBLE (`.message` says which rule),
   *  ENDED, NOT_FOUND, RATE_LIMITED. */
  enterDraw(draw) {
    return this.request("enter_draw", { draw });
  }

  /** Your wallet (`GET /api/me/coupons`): `[Coupon]`, newest first; `coupons` is replaced by it
   *  (then `change`). Same errors as myOrders(). */
  async myCoupons() {
    if (!this.fetchImpl || !this.apiUrl) throw new LiveSaleError("UNAVAILABLE", "no fetch() or HTTP API URL");
    const token = this.token;
    if (!token) throw new LiveSaleError("UNAUTHORIZED", "myCoupons() needs a token");
    this.couponsSync = { ...this.couponsSync, state: "running" };
    let body;
    try {
      ({ body } = await this._apiCall("GET", "/api/me/coupons", token));
    } catch (err) {
      this.couponsSync = { state: "failed", at: Date.now(), error: String(err?.message || err) };
      throw err;
    }
    if (token !== this.token) throw new LiveSaleError("STALE", "the token changed while the coupons were read");
    const list = (Array.isArray(body?.coupons) ? body.coupons : []).filter((c) => c && c.drop_id);
    this.coupons = new Map(list.map((c) => [c.drop_id, { ...c }]));
    this.couponsSync = { state: "ok", at: Date.now() };
    this._changed("my_coupons");
    return list;
  }

  /** A poll as the server has it (`GET /api/polls/{poll}`, also after it closed and Redis forgot it),
   *  with `you` (your option or null) when the client has a token; your vote goes into `myVotes`. */
  async pollResult(poll) {
    const token = this.token;
    const { body } = await this._apiCall("GET", `/api/polls/${encodeURIComponent(poll)}`, token);
    if (body && typeof body.you === "number" && token === this.token) {
      this.myVotes.set(poll, body.you);
      this._changed("poll_result");
    }
    return body;
  }

  /** A draw's published entrant list (`GET /api/draws/{draw}/entrants`): `{draw_id, commitment,
   *  list_hash, seed, k, entrants, winner_ids, redraws}`; check it with verifyDraw(). */
  async drawEntrants(draw) {
    const { body } = await this._apiCall("GET", `/api/draws/${encodeURIComponent(draw)}/entrants`, null);
    return body;
  }

  // host actions (host token) ---------------------------------------------------------------------

  goLive() { return this.request("go_live"); }
  endLive() { return this.request("end_live"); }
  pin(productId) { return this.request("pin", { product: productId }); }
  unpin() { return this.request("unpin"); }

  /**
   * Launch a flash sale. Accepts wire names or camelCase:
   * {product, units, price?, limit?, starts_in_s|startsInS?, duration_s|durationS?, hold_ttl_s|holdTtlS?,
   *  members_only?, pool?, variants? ([{pool, units?}]: a sale of several variants)}
   * Resolves with the `ok` reply (its `sale` field holds the new Sale; with `variants`: `group` and `sales`).
   */
  launchSale(opts) {
    const f = { product: opts.product ?? opts.productId ?? opts.product_id, units: opts.units };
    const map = {
      price: ["price", "unit_price", "unitPrice"], limit: ["limit", "per_user_limit", "perUserLimit"],
      starts_in_s: ["starts_in_s", "startsInS"], duration_s: ["duration_s", "durationS"],
      hold_ttl_s: ["hold_ttl_s", "holdTtlS"], members_only: ["members_only", "membersOnly"],
      pool: ["pool", "poolId"],
    };
    for (const [wire, names] of Object.entries(map)) {
      for (const n of names) {
        if (opts[n] !== undefined && opts[n] !== null && opts[n] !== "") { f[wire] = opts[n]; break; }
      }
    }
    // A sale of several variants: [{pool, units?}] (each variant's units from its own pool; the reply
    // is `ok {group, sales}` instead of `ok {sale}`).
    if (Array.isArray(opts.variants) && opts.variants.length) {
      f.variants = opts.variants.map((v) => ({ pool: v.pool, ...(v.units ? { units: v.units } : {}) }));
    }
    return this.request("launch_sale", f);
  }

  endSale(saleId) { return this.request("end_sale", { sale: saleId }); }

  /** The room's fan teams: `teams` [{team_id, name, colour, badge}], `{allowSwitch, switchCooldownS}`
   *  (or allow_switch, switch_cooldown_s). Resolves with `ok {teams}`. */
  setTeams(teams, opts = {}) {
    const f = { teams };
    const allow = opts.allow_switch ?? opts.allowSwitch;
    const cooldown = opts.switch_cooldown_s ?? opts.switchCooldownS;
    if (allow !== undefined) f.allow_switch = !!allow;
    if (cooldown !== undefined && cooldown !== null && cooldown !== "") f.switch_cooldown_s = Number(cooldown);
    return this.request("set_teams", f);
  }

  /** Open a poll: {question, options, duration_s?, poll_id?}. Resolves with `ok {poll}`. */
  openPoll(opts) {
    return this.request("open_poll", _fields(opts, { question: [], options: [], duration_s: ["durationS"], poll_id: ["pollId"] }));
  }

  closePoll(poll) { return this.request("close_poll", { poll }); }

  /** Drop coupons: {count, kind ("amount" | "percent"), value, currency?, min_spend?, sales?, products?,
   *  team?, starts_in_s?, claim_s?, valid_s?, drop_id?} (camelCase works too). Resolves with `ok {drop}`. */
  dropCoupons(opts) {
    return this.request("drop_coupons", _fields(opts, {
      count: [], kind: [], value: [], currency: [], min_spend: ["minSpend"], sales: [], products: [], team: [],
      starts_in_s: ["startsInS"], claim_s: ["claimS"], valid_s: ["validS"], drop_id: ["dropId"],
    }));
  }

  endDrop(drop) { return this.request("end_drop", { drop }); }

  /** Create a lucky draw: {title, winners, entry_s, prize: {pool, units?} | {coupon: {kind, value, ...}},
   *  rule?: {keyword?, team?, watched_s?, bought?}, pay_within_s?, draw_id?}. Resolves with `ok {draw}`
   *  (`POOL_SHORT` when the pool lacks winners x units). */
  createDraw(opts) {
    return this.request("create_draw", _fields(opts, {
      title: [], winners: [], entry_s: ["entryS"], prize: [], rule: [], pay_within_s: ["payWithinS"], draw_id: ["drawId"],
    }));
  }
  announce(text) { return this.request("announce", { text }); }
  hideComment(commentId) { return this.request("hide_comment", { comment: commentId }); }
  mute(user) { return this.request("mute", { user }); }

  // derived state ---------------------------------------------------------------------------------

  /** Sales as an array, soonest start first. */
  salesList() {
    return Array.from(this.sales.values()).sort((a, b) => (a.starts_at ?? 0) - (b.starts_at ?? 0));
  }

  /** A sale's phase at the current server time: scheduled | open | sold_out | closed. */
  salePhase(sale, now = this.serverNow()) {
    if (!sale) return null;
    if (sale.state === "closed") return "closed";
    if (sale.state === "sold_out") return "sold_out";
    if (sale.ends_at && now >= sale.ends_at) return "closed";
    if (sale.state === "scheduled" && sale.starts_at && now < sale.starts_at) return "scheduled";
    if (typeof sale.units_left === "number" && sale.units_left <= 0) return "sold_out";
    return "open";
  }

  /** The sales of a sale of variants (the Sales sharing `sale.group`), in the order of the product's
   *  `variants`; `[sale]` for a sale of one SKU, `[]` for an unknown sale id. */
  variantsOf(saleOrId) {
    const sale = typeof saleOrId === "string" ? this.sales.get(saleOrId) : saleOrId;
    if (!sale) return [];
    if (!sale.group) return [sale];
    const product = this.products.find((p) => p.product_id === sale.product_id)
      || (this.pinned && this.pinned.product_id === sale.product_id ? this.pinned : null);
    const order = (product && Array.isArray(product.variants) ? product.variants : []).map((v) => v.sku);
    const rank = (s) => { const i = order.indexOf(s.sku); return i < 0 ? order.length : i; };
    return Array.from(this.sales.values()).filter((s) => s.group === sale.group)
      .sort((a, b) => rank(a) - rank(b) || String(a.variant ?? "").localeCompare(String(b.variant ?? ""))
        || String(a.sale_id).localeCompare(String(b.sale_id)));
  }

  /** Your holds of one sale (newest first). */
  holdsOf(saleId) {
    return Array.from(this.holds.values()).filter((h) => h.sale === saleId).reverse();
  }

  /** A team's definition ({team_id, name, colour, badge}) by id, or null. */
  teamOf(teamId) {
    return (this.teams?.teams || []).find((t) => t.team_id === teamId) || null;
  }

  /** The polls: open ones first (newest first), then closed ones (newest first). */
  pollsList() {
    const at = (p) => p.closed_at ?? p.ends_at ?? p.opened_at ?? 0;
    return Array.from(this.polls.values()).sort((a, b) => ((a.state === "open" ? 0 : 1) - (b.state === "open" ? 0 : 1))
      || at(b) - at(a));
  }

  /** A poll's phase now: open | closed (its ends_at passed: closed, even before poll_closed arrives). */
  pollPhase(poll, now = this.serverNow()) {
    if (!poll) return null;
    if (poll.state !== "open") return "closed";
    return poll.ends_at && now >= poll.ends_at ? "closed" : "open";
  }

  /** A drop's phase now: scheduled | open | claimed_out | ended. */
  dropPhase(drop, now = this.serverNow()) {
    if (!drop) return null;
    if (drop.state === "ended") return "ended";
    if (drop.state === "claimed_out" || (typeof drop.left === "number" && drop.left <= 0)) return "claimed_out";
    if (drop.claim_until && now >= drop.claim_until) return "ended";
    if (drop.starts_at && now < drop.starts_at) return "scheduled";
    return "open";
  }

  /** A draw's phase now: open (entries taken) | closing (entries closed, the result is coming) | drawn. */
  drawPhase(draw, now = this.serverNow()) {
    if (!draw) return null;
    if (draw.state === "drawn" || Array.isArray(draw.winner_ids)) return "drawn";
    return draw.entry_until && now >= draw.entry_until ? "closing" : "open";
  }

  /**
   * What a coupon of your wallet would take off a hold (the server decides; this says what to offer):
   * `{ok, reason?, discount, listTotal, total, currency}`. `reason`: USED, EXPIRED, NOT_APPLICABLE
   * (another sale or product, another currency, or a list total under `min_spend`).
   */
  couponQuote(coupon, hold, now = this.serverNow()) {
    const h = typeof hold === "string" ? this.holds.get(hold) : hold;
    const sale = h ? this.sales.get(h.sale) : null;
    const qty = h?.qty || 1;
    const listTotal = sale ? (sale.unit_price ?? 0) * qty : (h?.amount ?? 0);
    const currency = sale?.currency || coupon?.currency || "EUR";
    const out = { ok: false, discount: 0, listTotal, total: listTotal, currency };
    if (!coupon || !h) return { ...out, reason: "NOT_FOUND" };
    if (coupon.state === "redeemed" || coupon.state === "applying") return { ...out, reason: "USED" };
    if (coupon.state === "expired" || (coupon.expires_at && now >= coupon.expires_at)) return { ...out, reason: "EXPIRED" };
    if (!sale || h.prize || listTotal <= 0) return { ...out, reason: "NOT_APPLICABLE" };
    const sales = coupon.sales || [];
    const products = coupon.products || [];
    if ((sales.length || products.length) && !sales.includes(sale.sale_id) && !products.includes(sale.product_id)) {
      return { ...out, reason: "NOT_APPLICABLE" };
    }
    const room = coupon.room_id ?? this.drops.get(coupon.drop_id)?.room_id;
    if (!sales.length && !products.length && room && room !== this.roomId) return { ...out, reason: "NOT_APPLICABLE" };
    if (coupon.kind === "amount" && coupon.currency && coupon.currency !== currency) return { ...out, reason: "NOT_APPLICABLE" };
    if (listTotal < (coupon.min_spend || 0)) return { ...out, reason: "NOT_APPLICABLE", minSpend: coupon.min_spend };
    const discount = coupon.kind === "percent" ? Math.floor((listTotal * coupon.value) / 100) : Math.min(coupon.value, listTotal);
    return { ok: true, discount, listTotal, total: listTotal - discount, currency };
  }

  /** The wallet's coupons that apply to a hold, the largest discount first: [{coupon, quote}]. */
  couponsFor(hold, now = this.serverNow()) {
    const out = [];
    for (const c of this.coupons.values()) {
      const quote = this.couponQuote(c, hold, now);
      if (quote.ok) out.push({ coupon: c, quote });
    }
    return out.sort((a, b) => b.quote.discount - a.quote.discount || String(a.coupon.drop_id).localeCompare(String(b.coupon.drop_id)));
  }
}

/** The wire fields of a host request from wire names or camelCase aliases; empty values left out. */
function _fields(opts, spec) {
  const f = {};
  for (const [wire, aliases] of Object.entries(spec)) {
    for (const n of [wire, ...aliases]) {
      const v = opts?.[n];
      if (v !== undefined && v !== null && v !== "") { f[wire] = v; break; }
    }
  }
  return f;
}

// ---------------------------------------------------------------------------------------------
// lucky draws: the check anyone can run (docs/DRAWS.md)

function _hex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

function _fromHex(hex) {
  const s = String(hex || "");
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(s)) throw new LiveSaleError("INVALID", "not a hex string");
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(i * 2, i * 2 + 2), 16);
  return out;
}

function _concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

async function _sha256(bytes) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) throw new LiveSaleError("UNAVAILABLE", "no WebCrypto (crypto.subtle needs a secure context: https or localhost)");
  return new Uint8Array(await subtle.digest("SHA-256", bytes));
}

/** Code-point order (Python's sorted() on str), not JavaScript's UTF-16 default. */
function _byCodePoint(a, b) {
  const x = Array.from(a);
  const y = Array.from(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d) return d;
  }
  return x.length - y.length;
}

/**
 * Recompute a lucky draw from its published data (`GET /api/draws/{draw}/entrants`, or
 * client.drawEntrants()) with WebCrypto, as docs/DRAWS.md describes:
 * commitment = SHA-256(seed); list_hash = SHA-256(the sorted entry ids joined by "\n");
 * rank(e) = SHA-256(seed || list_hash || utf8(e)); the winners are the first k by (rank, e); each
 * redraw round replaces its unpaid winners by the next entrants in that order who have not won yet.
 * Resolves with `{ok, checks: [{name, ok, detail}], ranking: [{entry_id, rank}], winners, rounds}`.
 */
export async function verifyDraw(data) {
  const enc = new TextEncoder();
  const checks = [];
  const check = (name, ok, detail = "") => { checks.push({ name, ok: !!ok, detail }); return !!ok; };
  if (!data || typeof data !== "object") throw new LiveSaleError("INVALID", "no draw data");
  if (!data.seed) {
    check("seed", false, "the seed is published when entries close: the draw has not been drawn yet");
    return { ok: false, checks, ranking: [], winners: [], rounds: [] };
  }
  const seed = _fromHex(data.seed);
  const commitment = _hex(await _sha256(seed));
  check("commitment", commitment === String(data.commitment || "").toLowerCase(),
    `SHA-256(seed) = ${commitment}; published before the entries: ${data.commitment}`);
  const entrants = (Array.isArray(data.entrants) ? data.entrants : []).map(String);
  const sorted = entrants.slice().sort(_byCodePoint);
  check("sorted", sorted.every((e, i) => e === entrants[i]) && new Set(sorted).size === sorted.length,
    `${entrants.length} entry ids, published sorted and distinct`);
  const listHash = _hex(await _sha256(enc.encode(sorted.join("\n"))));
  check("list_hash", listHash === String(data.list_hash || "").toLowerCase(),
    `SHA-256(entry ids joined by "\\n") = ${listHash}; published: ${data.list_hash}`);
  const prefix = _concat(seed, _fromHex(listHash));
  const ranking = [];
  for (const e of sorted) ranking.push({ entry_id: e, rank: _hex(await _sha256(_concat(prefix, enc.encode(e)))) });
  ranking.sort((a, b) => (a.rank < b.rank ? -1 : a.rank > b.rank ? 1 : _byCodePoint(a.entry_id, b.entry_id)));
  const k = Math.max(0, Math.floor(Number(data.k ?? data.winners ?? 0)));
  const first = ranking.slice(0, k).map((r) => r.entry_id);
  // redraws: each round's replaced winners give way to the next entrants in the ranking who never won
  const won = new Set(first);
  const current = new Set(first);
  const rounds = [];
  let roundsOk = true;
  for (const r of (Array.isArray(data.redraws) ? data.redraws : []).slice().sort((a, b) => a.round - b.round)) {
    const replaced = (r.replaced || []).map(String);
    const expect = [];
    for (const x of ranking) {
      if (expect.length >= replaced.length) break;
      if (!won.has(x.entry_id)) expect.push(x.entry_id);
    }
    const added = (r.added || []).map(String);
    const ok = replaced.every((x) => current.has(x)) && expect.length === added.length && expect.every((x, i) => x === added[i]);
    roundsOk = roundsOk && ok;
    rounds.push({ round: r.round, replaced, added, expected: expect, ok });
    for (const x of replaced) current.delete(x);
    for (const x of added) { current.add(x); won.add(x); }
  }
  const published = (Array.isArray(data.winner_ids) ? data.winner_ids : []).map(String);
  const same = (a, b) => a.length === b.length && a.every((x) => b.includes(x));
  check("winners", same(published, first) || same(published, Array.from(current)),
    `the first ${k} by rank: ${first.join(", ") || "none"}; published: ${published.join(", ") || "none"}`);
  if (rounds.length) check("redraws", roundsOk, `${rounds.length} redraw round${rounds.length === 1 ? "" : "s"}, each with the next entrants who had not won`);
  return { ok: checks.every((c) => c.ok), checks, ranking, winners: first, current: Array.from(current), rounds, commitment, list_hash: listHash };
}

/** Create a client and start it. Returns the client (an EventTarget); `await client.start()` waits for the join. */
export function connect(opts) {
  const client = new LiveSaleClient(opts);
  client.start().catch(() => { /* surfaced as `state: closed` and `error` events */ });
  return client;
}
