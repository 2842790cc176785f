// Small DOM and HTTP helpers shared by the pages (room.js, host.js, merchant.js, verify.js):
// elements by test id, text that only changes when it differs, the toast, number formats, element
// building, the JSON API with a bearer token (typed errors: .status, .code), the token handed over in
// the URL's fragment, a viewer's identity from a token (room.js, shop.js).

import { tokenClaims } from "/static/livesale.js";

export const byId = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

export function setText(el, text) {
  text = text ?? "";
  if (el && el.textContent !== text) el.textContent = text;
}

let toastTimer = null;
export function toast(text, kind = "info") {
  const el = byId("toast");
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

export function num(v) {
  const n = Number(v);
  return Number.isFinite(n) ? n : 0;
}

export function fmtInt(n) {
  return new Intl.NumberFormat().format(Math.round(num(n)));
}

/** A stable colour hue (0-359) for a name: avatars, badges. */
export function hue(str) {
  let h = 0;
  for (const ch of String(str)) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return h % 360;
}

export function minorDigits(currency) {
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits;
  } catch {
    return 2;
  }
}

export function el(tag, props = {}, ...children) {
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

/** The JSON API with ``getToken()``'s bearer token: the parsed reply, or an Error with .status (0:
 *  the server could not be reached) and .code (the server's typed code, else OFFLINE / HTTP_<status>). */
export function apiWith(getToken) {
  return async function api(method, path, body) {
    let res;
    try {
      res = await fetch(path, {
        method,
        headers: { Authorization: `Bearer ${getToken()}`, ...(body ? { "Content-Type": "application/json" } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
    } catch (e) {
      const err = new Error(`cannot reach the server (${e.message})`);
      err.code = "OFFLINE";
      err.status = 0;
      throw err;
    }
    let data = null;
    try { data = await res.json(); } catch { data = null; }
    if (!res.ok) {
      const err = new Error(data?.error?.message || `${method} ${path}: HTTP ${res.status}`);
      err.status = res.status;
      err.code = data?.error?.code || `HTTP_${res.status}`;
      throw err;
    }
    return data;
  };
}

/** The token handed over in the URL's fragment (#token=...), kept in sessionStorage under ``key`` and
 *  taken out of the address bar; else the one stored before. */
export function readToken(key) {
  const m = location.hash.match(/[#&]token=([^&]+)/);
  if (m) {
    const t = decodeURIComponent(m[1]);
    sessionStorage.setItem(key, t);
    history.replaceState(null, "", location.pathname + location.search); // keep it out of history
    return t;
  }
  return sessionStorage.getItem(key);
}

/** A viewer's identity from a token (a viewer's or a host's, not expiring within a minute), or null.
 *  ``platform``: the token was handed over by the platform (#token=), not a guest token of this browser. */
export function identityOf(token, platform) {
  const claims = typeof token === "string" ? tokenClaims(token) : null;
  if (!claims || !claims.sub || (claims.role !== "viewer" && claims.role !== "host")) return null;
  if (claims.exp && claims.exp * 1000 < Date.now() + 60000) return null; // expired (soon)
  return { token, user: claims.sub, name: claims.name || claims.sub, guest: claims.guest === true, platform };
}

/** #token=<jwt> in the URL: read it once and remove it from the address bar (and history). */
export function tokenFromFragment() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const token = params.get("token");
  if (!token) return null;
  params.delete("token");
  const rest = params.toString();
  history.replaceState(history.state, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  return token;
}
