"""The checkout burst through a pool-backed sale and through a plain sale, interleaved on one server
(``make bench ARGS="--only pool"``; the ``pool`` step of ``loadtest/bench.py``).

One gateway process (core 0) with a private Valkey (core 0, as the checkout step's burst row), one room
with the load product (SKU ``LOAD-1``) and one stock pool for that SKU, opened over HTTP with a merchant
token minted from the server's secret (``POST /api/pools``). Then, after one unmeasured warm-up burst
(plain), the sold-out burst of the checkout step runs ``POOL_REPEAT`` times per kind, interleaved:
plain, pool, plain, pool, plain, pool. Both kinds launch over the host's WebSocket (``launch_sale``, the
pool-backed one with ``pool``: its id is ``<pool>--s<hex>`` and its keys sit in the pool's hash slot),
sell the same units (buyers / 10, per-user limit 1) to buyers that join fresh for each run (user ids
distinct per run), buy with the same ``buy`` message, and are measured the same way
(``loadtest.checkout.run``: the gateway process's utime+stime from the launch to the last result ÷ clicks
answered). Each sale is ended right after its run (``end_sale``), so no earlier sale ticks, ends or
returns units during a later run; holds last an hour, so none expire during the step.

Reported: every run, the medians per kind, pool / plain of the median gateway CPU per click and the
verdict (at or below ``POOL_TOLERANCE``: "within 10%"). Written into docs/BENCHMARKS.md as the section
between the ``bench:pool`` markers (``--only pool`` replaces just that section; a full ``make bench``
writes it with the rest).

The load generation drives the public protocol only (HTTP and WebSocket); no server package is imported.
"""

from __future__ import annotations

import asyncio
import os
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

from . import checkout, doc_sections, lean

POOL_REPEAT = 3             # runs per kind, interleaved plain, pool, plain, pool, ...
POOL_TOLERANCE = 1.10       # pool / plain median gateway CPU per click at or below this: "within 10%"
KINDS = ("plain", "pool")
POOL_ID = "pl-bench"
MERCHANT = "bench-merchant"
SKU, PRICE, CURRENCY = "LOAD-1", 1999, "EUR"  # loadtest.serverproc.setup_room's product
HOLD_TTL_S = 3600           # no hold expires (and gives units back) while the step runs
START, END = "<!-- bench:pool:start -->", "<!-- bench:pool:end -->"


def plan(quick: bool) -> dict[str, Any]:
    buyers = 1000 if quick else 15000
    units = buyers // 10
    return {"buyers": buyers, "units": units, "repeat": POOL_REPEAT, "warmup": 1, "quick": quick,
            "what": f"checkout burst: {buyers:,} buyers at once for {units:,} units, private Valkey on core 0 with "
                    "the gateway"}


async def open_pool(url: str, secret: str, units: int, pool_id: str = POOL_ID) -> dict[str, Any]:
    """Open the bench's stock pool for the load product's SKU (a merchant token minted with the secret)."""
    tok = checkout.mint_merchant_token(secret, MERCHANT)
    st, body = await lean.http_json("POST", f"{url}/api/pools", {
        "pool_id": pool_id, "sku": SKU, "title": "Load test tee", "unit_price": PRICE, "currency": CURRENCY,
        "units": units, "per_user_limit": 1}, tok)
    if st not in (200, 201):
        raise RuntimeError(f"POST /api/pools -> {st} {body}")
    return body


async def pool_audit(url: str, secret: str, pool_id: str = POOL_ID) -> dict[str, Any]:
    """``GET /api/pools/{pool}/audit`` as the pool's merchant: the pool's balance in Redis and against SQL."""
    st, body = await lean.http_json("GET", f"{url}/api/pools/{pool_id}/audit", None,
                                    checkout.mint_merchant_token(secret, MERCHANT))
    if st != 200:
        return {"ok": False, "problems": [f"audit -> {st} {body}"]}
    return body


async def end_sale(url: str, room: str, host_token: str, sale: str) -> None:
    st, body = await lean.http_json("POST", f"{url}/api/rooms/{room}/actions/end_sale", {"sale": sale}, host_token)
    if st not in (200, 201, 204):
        raise RuntimeError(f"end_sale {sale} -> {st} {body}")


def complete(x: dict[str, Any]) -> bool:
    """Every click answered, no oversell, the sale's counters consistent."""
    return ("error" not in x and x.get("results") == x.get("clicks") and not x.get("oversell")
            and bool(x.get("consistent")))


NOISY = 0.15  # other work's share of core 0 or core 1 during a run above this: the run is flagged as noisy


def others(x: dict[str, Any]) -> tuple[float | None, float | None]:
    """Busy share of core 0 / core 1 over the run's window that was not ours: core 0 minus the gateway's and
    the Valkey's CPU, core 1 minus the load clients' (other sessions' tests, the VM's neighbours)."""
    cb, w = x.get("core_busy") or {}, x.get("window_s")
    if not cb or not w:
        return None, None
    c0, c1 = cb.get("0", cb.get(0)), cb.get("1", cb.get(1))
    ours0 = (x.get("server_cpu_s") or 0.0) + (x.get("engine", {}).get("engine_cpu_s") or 0.0)
    o0 = None if c0 is None else round(max(0.0, c0 - ours0 / w), 2)
    o1 = None if c1 is None else round(max(0.0, c1 - (x.get("client_cpu_s") or 0.0) / w), 2)
    return o0, o1


def noisy(x: dict[str, Any]) -> bool:
    return any(v is not None and v > NOISY for v in others(x))


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs that measured (a failed run left out and flagged), every run's values kept."""
    ok = [x for x in runs if "error" not in x and x.get("server_us_per_click") is not None]

    def med(k: str) -> float | None:
        vals = [x[k] for x in ok if x.get(k) is not None]
        return statistics.median(vals) if vals else None
    return {"cpu": med("server_us_per_click"), "p99_ms": med("p99_ms"), "throughput": med("clicks_per_s"),
            "n": len(ok), "cpu_runs": [x.get("server_us_per_click") for x in runs],
            "p99_runs": [x.get("p99_ms") for x in runs], "throughput_runs": [x.get("clicks_per_s") for x in runs],
            "incomplete": [i + 1 for i, x in enumerate(runs) if not complete(x)],
            "noisy": [i + 1 for i, x in enumerate(runs) if noisy(x)],
            "errors": [str(x["error"])[:200] for x in runs if "error" in x]}


def verdict(ratio: float | None) -> str:
    if ratio is None:
        return "no result"
    pct = round(100 * ratio - 100)
    if ratio <= POOL_TOLERANCE:
        return "within 10%" + (f" ({pct:+d}%)" if pct else "")
    return f"**not within 10%** ({pct:+d}%)"


Runner = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def interleaved(base: dict[str, Any], p: dict[str, Any], run: Runner | None = None,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
    """The warm-up and the interleaved runs on a running server whose pool is open. ``base``: the
    checkout.run config without the sale's kind (url, room, product, host_token, secret, server_pid,
    client_cores...); ``run``: checkout.run with the engine bound (the default: without engine stats)."""
    go: Runner = run or (lambda cfg: checkout.run(cfg, log=log))
    cfg0 = dict(base, mode="burst", buyers=p["buyers"], units=p["units"], hold_ttl_s=HOLD_TTL_S)
    seq = [("warmup", w) for w in range(p["warmup"])] + [(k, i) for i in range(p["repeat"]) for k in KINDS]
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    warm: list[dict[str, Any]] = []
    order: list[str] = []
    for n, (kind, i) in enumerate(seq):
        label = f"{kind} (run {i + 1}/{p['warmup'] if kind == 'warmup' else p['repeat']})"
        log(f"pool A/B: {label}: {p['what']}")
        cfg = dict(cfg0, user_tag=f"r{n}x")
        if kind == "pool":
            cfg["pool"] = POOL_ID
        lb = round(os.getloadavg()[0], 2)
        try:
            x = await go(cfg)
        except Exception as exc:  # keep going with the other runs
            x = {"error": repr(exc)}
            log(f"pool A/B {label} FAILED: {exc!r}")
        x["loadavg_before"] = lb
        if x.get("sale"):
            try:
                await end_sale(base["url"], base["room"], base["host_token"], x["sale"])
            except Exception as exc:
                x.setdefault("notes", []).append(f"end_sale failed: {exc!r}")
        if kind == "pool" and x.get("sale") and not str(x["sale"]).startswith(POOL_ID + "--"):
            x["error"] = f"sale {x['sale']} is not drawn from pool {POOL_ID}"
        (warm if kind == "warmup" else runs[kind]).append(x)
        order.append(kind)
        await asyncio.sleep(1.0)
    summ = {k: summarize(rs) for k, rs in runs.items()}
    a, b = summ["plain"]["cpu"], summ["pool"]["cpu"]
    ratio = round(b / a, 3) if a and b else None
    return {"what": p["what"], "buyers": p["buyers"], "units": p["units"], "repeat": p["repeat"], "quick": p["quick"],
            "order": order, "warmup": warm, "runs": runs, "summary": summ, "cpu_ratio": ratio,
            "verdict": verdict(ratio)}


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def section(r: dict[str, Any], machine: dict[str, Any], command: str) -> list[str]:
    """The pool / plain section (with its markers) for docs/BENCHMARKS.md and the console."""
    L: list[str] = [START, f"## Pool-backed sale vs plain sale: the checkout burst ({machine['date']})", ""]
    a = L.append
    if "error" in r and "summary" not in r:
        a(f"`{command}`: **failed**: {str(r['error'])[:300]}")
        a("")
        a(END)
        return L
    pl, po = r["summary"]["plain"], r["summary"]["pool"]
    a(f"`{command}`" + (" (**quick smoke run: small counts**)" if r.get("quick") else "")
      + f" on commit {machine.get('checkout') or machine.get('git')}. Machine: {machine['cpu']}, {machine['cores']} "
      f"cores, Python {machine['python']}, kernel {machine['kernel']}. One gateway process (core 0) and a private "
      f"Valkey (core 0), load clients on core 1; one room, one stock pool `{POOL_ID}` for the room's product SKU. "
      f"{r['what'][0].upper() + r['what'][1:]}; one unmeasured warm-up burst (plain), then the two kinds "
      f"interleaved, {r['repeat']} runs each ({', '.join(k for k in r['order'] if k != 'warmup')}), all on the same "
      "server. Plain: `launch_sale` with units of its own; pool-backed: `launch_sale` with `pool` (the units move "
      "out of the pool; the sale's keys sit in the pool's hash slot). Fresh buyers each run; every sale ended "
      "after its run. CPU = the gateway process's utime+stime (/proc, 10 ms ticks) from the launch to the last "
      "result ÷ clicks answered; lower is better. Each cell: the median over the runs, every run in brackets. "
      f"Verdict: pool / plain CPU at or below {POOL_TOLERANCE:.2f} is 'within 10%'.")
    a("")
    a("| metric | plain sale | pool-backed sale | pool / plain | verdict |")
    a("|---|---|---|---|---|")

    def cell(s: dict[str, Any], k: str, runs: str, nd: int) -> str:
        vals = s[runs]
        return _fmt(s[k], nd) + (f" ({' / '.join(_fmt(v, nd) for v in vals)})" if len(vals) > 1 else "")

    def ratio(k: str) -> str:
        return f"{po[k] / pl[k]:.2f}" if po[k] and pl[k] else "–"
    a(f"| gateway CPU µs/click | {cell(pl, 'cpu', 'cpu_runs', 1)} | {cell(po, 'cpu', 'cpu_runs', 1)} | "
      f"{_fmt(r['cpu_ratio'], 3)} | {r['verdict']} |")
    a(f"| p99 click → result ms | {cell(pl, 'p99_ms', 'p99_runs', 1)} | {cell(po, 'p99_ms', 'p99_runs', 1)} | "
      f"{ratio('p99_ms')} | |")
    a(f"| clicks/s answered | {cell(pl, 'throughput', 'throughput_runs', 0)} | "
      f"{cell(po, 'throughput', 'throughput_runs', 0)} | {ratio('throughput')} | |")
    a("")
    a("| run | sale | joined | results | RESERVED / SOLD_OUT | oversell | consistent | gateway CPU µs/click | "
      "clicks/s | p99 ms | core 0 / core 1 busy | of which other work | load avg before |")
    a("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    seq = [("warmup", x) for x in r.get("warmup", [])]
    it = {k: iter(r["runs"][k]) for k in KINDS}
    seq += [(k, next(it[k])) for k in r["order"] if k != "warmup"]
    for n, (kind, x) in enumerate(seq, 1):
        name = f"{n}. {kind}" + (" (not counted)" if kind == "warmup" else "")
        if "error" in x and "results" not in x:
            a(f"| {name} | failed: {str(x['error'])[:100]} | | | | | | | | | | | {_fmt(x.get('loadavg_before'), 2)} |")
            continue
        codes, cb = x.get("codes", {}), x.get("core_busy", {})
        o0, o1 = others(x)
        a(f"| {name} | `{x.get('sale', '?')}` | {_fmt(x.get('joined'))} | {_fmt(x.get('results'))} / "
          f"{_fmt(x.get('clicks'))} | {_fmt(codes.get('RESERVED', 0))} / {_fmt(codes.get('SOLD_OUT', 0))} | "
          f"{'**YES**' if x.get('oversell') else 'no'} | {'yes' if x.get('consistent') else '**no**'} | "
          f"{_fmt(x.get('server_us_per_click'))} | {_fmt(x.get('clicks_per_s'))} | {_fmt(x.get('p99_ms'))} | "
          f"{_fmt(cb.get('0', cb.get(0)), 2)} / {_fmt(cb.get('1', cb.get(1)), 2)} | "
          f"{'**' if noisy(x) else ''}{_fmt(o0, 2)} / {_fmt(o1, 2)}{'**' if noisy(x) else ''} | "
          f"{_fmt(x.get('loadavg_before'), 2)} |")
    a("")
    au = r.get("audit")
    if au is not None:
        a(f"- Pool audit afterwards (`GET /api/pools/{POOL_ID}/audit`): "
          + ("ok" if au.get("ok") else "**problems**: " + "; ".join(map(str, au.get("problems", [])))[:400])
          + (f" (received {au.get('received')}, available {au.get('available')}, at sales {au.get('at_sales')})"
             if "received" in au else ""))
    for kind in KINDS:
        s = r["summary"][kind]
        if s["incomplete"] or s["errors"]:
            a(f"- {kind}: run(s) {', '.join(map(str, s['incomplete']))} incomplete (unanswered clicks, oversell, "
              f"inconsistent counters or an error){': ' + '; '.join(s['errors']) if s['errors'] else ''}")
    a("- \"core busy\" = /proc/stat busy share of each core over the measured window, every process included; "
      "\"of which other work\" = core 0 minus the gateway's and the Valkey's CPU, core 1 minus the load clients' "
      f"(other sessions' tests, the VM's neighbours); above {NOISY:.2f} on either core the run is marked in bold "
      "as noisy. Compare the two kinds within this run only.")
    flagged = [str(n) for n, (kind, x) in enumerate(seq, 1) if kind != "warmup" and noisy(x)]
    if flagged:
        a(f"- Noisy runs (other work above the threshold): rows {', '.join(flagged)} of {len(seq)}"
          + ". Other work on the machine inflates the gateway's CPU per click (shared caches, run-queue "
          "waits that change its batching), so the medians carry that noise.")
    if r.get("notes"):
        for n in r["notes"]:
            a(f"- {n}")
    if L[-1] != "":
        a("")
    a(END)
    return L


def splice(doc: str, sec: list[str]) -> str:
    """``doc`` with its pool section replaced by ``sec`` (loadtest/doc_sections.py)."""
    return doc_sections.splice(doc, sec, START, END)


def old_section(doc: str) -> list[str]:
    """The pool section of a docs/BENCHMARKS.md text, if any."""
    return doc_sections.old_section(doc, START, END)


def target(r: dict[str, Any]) -> tuple[str, str, bool] | None:
    """(target, measured, met) for the Targets table."""
    if not r or r.get("cpu_ratio") is None:
        return None
    pl, po = r["summary"]["plain"], r["summary"]["pool"]
    return ("pool-backed sale: median gateway CPU per click within 10% of a plain sale's (checkout burst, "
            f"{r['repeat']} runs each, interleaved)",
            f"pool {_fmt(po['cpu'])} vs plain {_fmt(pl['cpu'])} µs/click: {r['cpu_ratio']:.3f}x",
            r["cpu_ratio"] <= POOL_TOLERANCE)
