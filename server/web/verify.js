// The lucky-draw check (/verify/<draw_id>): reads the draw's published data (GET
// /api/draws/{draw}/entrants) and recomputes its winners in the browser with WebCrypto
// (livesale.js verifyDraw(): the procedure of docs/DRAWS.md). Nothing is trusted from the server but
// the published numbers themselves.
import { verifyDraw } from "/static/livesale.js";
import { byId, el } from "/static/ui.js";

const SHOWN = 200;  // ranking rows listed (every winner and redraw is among the first ones)
const LABEL = {
  seed: "Seed published",
  commitment: "The seed matches the commitment published before the entries",
  sorted: "The entrant list is sorted, without duplicates",
  list_hash: "The entrant list matches its published hash",
  winners: "The winners are the first entries of the ranking",
  redraws: "Each redraw took the next entrants who had not won",
};

function entries(n) {
  return `${n} ${n === 1 ? "entry" : "entries"}`;
}

function drawFromUrl() {
  const m = location.pathname.match(/\/verify\/([^/?#]+)/);
  if (m) return decodeURIComponent(m[1]);
  return new URLSearchParams(location.search).get("draw") || "";
}


async function check(drawId) {
  const result = byId("verify-result");
  const error = byId("verify-error");
  error.textContent = "";
  result.hidden = true;
  const path = `/api/draws/${encodeURIComponent(drawId)}/entrants`;
  let data;
  try {
    const res = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    data = await res.json().catch(() => null);
    if (!res.ok) throw new Error(data?.error?.message || `${path} answered ${res.status}`);
  } catch (err) {
    error.textContent = `Could not read the draw: ${err.message || err}`;
    return;
  }
  let out;
  try {
    out = await verifyDraw(data);
  } catch (err) {
    error.textContent = `Could not check the draw: ${err.message || err}`;
    return;
  }
  const status = byId("verify-status");
  status.dataset.ok = out.ok ? "true" : "false";
  status.textContent = out.ok
    ? `✓ Verified: the ${out.winners.length === 1 ? "winner follows" : "winners follow"} from the published data (${entries(data.entrants?.length ?? 0)}).`
    : !data.seed ? "Not drawn yet: the seed is published when entries close." : "✗ Mismatch: the published data does not give these winners.";
  byId("verify-k").textContent = String(data.k ?? out.winners.length);
  const json = byId("verify-json");
  json.href = path;
  byId("verify-checks").replaceChildren(...out.checks.map((c) => el("li",
    { class: "verify-check", "data-testid": `verify-check-${c.name}`, "data-ok": c.ok ? "true" : "false" },
    el("span", { class: "verify-mark", "aria-hidden": "true" }, c.ok ? "✓" : "✗"),
    el("span", { class: "verify-check-text" }, el("strong", {}, LABEL[c.name] || c.name), el("span", { class: "verify-detail" }, c.detail)))));
  const winners = new Set(out.current || out.winners);
  const first = new Set(out.winners);
  byId("verify-count").textContent = entries(out.ranking.length);
  byId("verify-ranking").querySelector("tbody").replaceChildren(...out.ranking.slice(0, SHOWN).map((r, i) => el("tr",
    { "data-testid": "verify-row", "data-entry": r.entry_id, "data-winner": winners.has(r.entry_id) ? "true" : "false" },
    el("td", { class: "num" }, String(i + 1)),
    el("td", { class: "mono" }, r.entry_id),
    el("td", { class: "mono verify-rank", title: r.rank }, `${r.rank.slice(0, 16)}…`),
    el("td", {}, winners.has(r.entry_id) ? (first.has(r.entry_id) ? "★ winner" : "★ redraw winner") : first.has(r.entry_id) ? "replaced (prize not claimed)" : ""))));
  result.hidden = false;
}

const input = byId("verify-draw-input");
byId("verify-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const id = input.value.trim();
  if (!id) return;
  history.replaceState(null, "", `/verify/${encodeURIComponent(id)}`);
  check(id);
});
const initial = drawFromUrl();
if (initial) { input.value = initial; check(initial); }
