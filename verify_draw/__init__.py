"""Check a livesale lucky draw from its published data alone (docs/DRAWS.md).

    python -m verify_draw entrants.json            # or "-" (stdin), or the URL of
    livesale verify-draw https://shop.example/api/draws/w-1f2e/entrants --commitment <from draw_opened>

The input is the JSON of ``GET /api/draws/{draw}/entrants``: ``{draw_id, commitment, list_hash,
seed, k, entrants, winner_ids, redraws}``. The checks: SHA-256(seed) equals the commitment published
before entries opened; SHA-256 of the sorted entrant list equals ``list_hash``; ranking every entrant
by SHA-256(seed || list hash || entry id) gives the published winners, and each redraw round gives
the next entrants in that ranking. Exit status 0 when everything agrees, 1 otherwise.

This package uses the Python standard library only and implements the procedure from the document,
not from the server's code (``commerce/draw_proof.py``), so it can be copied and run on its own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Check", "Report", "verify", "load", "main", "ranking"]

LIMITATION = ("It does not prove that the list holds every entrant: an entrant left out can see that "
              "their entry id is missing, but an entrant the server made up cannot be told apart.")


@dataclass
class Check:
    ok: bool
    what: str


@dataclass
class Report:
    draw_id: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, ok: bool, what: str) -> bool:
        self.checks.append(Check(ok, what))
        return ok

    def text(self) -> str:
        lines = [f"draw {self.draw_id}"]
        lines += [f"  {'OK  ' if c.ok else 'FAIL'}  {c.what}" for c in self.checks]
        failed = sum(not c.ok for c in self.checks)
        if self.ok:
            lines.append("VERIFIED: the published winners follow from the committed seed and the published list.")
        else:
            lines.append(f"NOT VERIFIED: {failed} check(s) failed.")
        lines.append(f"Note: {LIMITATION}")
        return "\n".join(lines)


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ranking(seed: bytes, entries: Sequence[str], list_hash_hex: str) -> list[str]:
    """The entrants in drawing order: by (SHA-256(seed + list hash bytes + entry id) hex, entry id)."""
    salt = seed + bytes.fromhex(list_hash_hex)
    return sorted(entries, key=lambda e: (_sha256_hex(salt + e.encode()), e))


def _hex(value: Any, size: int) -> str | None:
    """``value`` as lower-case hex of ``size`` bytes, or None."""
    if not isinstance(value, str) or len(value) != 2 * size:
        return None
    try:
        bytes.fromhex(value)
    except ValueError:
        return None
    return value.lower()


def _strs(value: Any) -> list[str] | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return list(value)


def _short(ids: Sequence[str], most: int = 12) -> str:
    shown = ", ".join(ids[:most])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > most else "") if ids else "(none)"


def verify(data: Any, *, commitment: str | None = None, list_hash: str | None = None, seed: str | None = None,
           entry_id: str | None = None) -> Report:
    """Every check of one draw. ``commitment`` / ``list_hash`` / ``seed``: values to check against
    instead of the document's (e.g. the commitment of the ``draw_opened`` event you saw yourself);
    ``entry_id``: also check that this entry (yours) is in the list."""
    if not isinstance(data, dict):
        report = Report("?")
        report.add(False, "the input is a JSON object (GET /api/draws/{draw}/entrants)")
        return report
    report = Report(str(data.get("draw_id", "?")))
    seed_hex = _hex(seed if seed is not None else data.get("seed"), 32)
    commit = _hex(commitment if commitment is not None else data.get("commitment"), 32)
    lhash = _hex(list_hash if list_hash is not None else data.get("list_hash"), 32)
    entries = _strs(data.get("entrants"))
    winners = _strs(data.get("winner_ids"))
    k = data.get("k")
    fields_ok = report.add(
        seed_hex is not None and commit is not None and lhash is not None and entries is not None
        and winners is not None and isinstance(k, int) and not isinstance(k, bool) and k >= 0
        and isinstance(data.get("redraws", []), list),
        "the document has seed, commitment and list_hash (64 hex characters each), entrants, winner_ids, k"
        " and redraws")
    if not fields_ok:
        return report
    assert seed_hex is not None and commit is not None and lhash is not None and entries is not None
    assert winners is not None and isinstance(k, int)
    seed_bytes = bytes.fromhex(seed_hex)
    got = _sha256_hex(seed_bytes)
    report.add(got == commit, f"SHA-256(seed) = {got} equals the commitment {commit}")
    report.add(entries == sorted(set(entries)), f"the entrant list ({len(entries)}) is sorted, without duplicates")
    got = _sha256_hex("\n".join(entries).encode())
    report.add(got == lhash, f"SHA-256(entrant list) = {got} equals list_hash {lhash}")
    order = ranking(seed_bytes, entries, lhash)
    expect = order[:min(k, len(entries))]
    report.add(winners == expect, f"the {len(expect)} winner(s) recomputed: {_short(expect)}"
               + ("" if winners == expect else f"; published: {_short(winners)}"))
    _check_redraws(report, data.get("redraws") or [], order, expect)
    if entry_id is not None:
        report.add(entry_id in entries, f"your entry {entry_id} is in the list")
    return report


def _check_redraws(report: Report, redraws: list[Any], order: list[str], first: list[str]) -> None:
    """Each round replaces prizes of the previous round's winners and adds, in ranking order, the next
    entrants who have not won yet: as many as were replaced, or all that are left."""
    won = set(first)
    last_round = list(first)
    for i, rd in enumerate(redraws, start=1):
        replaced = _strs(rd.get("replaced")) if isinstance(rd, dict) else None
        added = _strs(rd.get("added")) if isinstance(rd, dict) else None
        if replaced is None or added is None or rd.get("round") != i:
            report.add(False, f"redraw {i} is {{round: {i}, replaced: [...], added: [...]}}")
            return
        report.add(set(replaced) <= set(last_round) and len(set(replaced)) == len(replaced),
                   f"redraw round {i}: the {len(replaced)} replaced entrant(s) won in the round before")
        expect = [e for e in order if e not in won][:len(replaced)]
        report.add(added == expect, f"redraw round {i}: added {_short(expect)}"
                   + ("" if added == expect else f"; published: {_short(added)}"))
        won |= set(added)
        last_round = added


def load(source: str, timeout_s: float = 30.0) -> Any:
    """The JSON document from a file path, "-" (stdin) or an http(s) URL."""
    if source == "-":
        return json.load(sys.stdin)
    if source.startswith(("http://", "https://")):
        req = urllib.request.Request(source, headers={"Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read().decode("utf-8"))
    with open(source, encoding="utf-8") as f:
        return json.load(f)


def parser(prog: str = "python -m verify_draw") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Check a lucky draw's winners from its published data "
                                                       "(GET /api/draws/{draw}/entrants); docs/DRAWS.md.")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help='the entrants JSON: a file, "-" for stdin, or an http(s) URL')
    p.add_argument("--commitment", help="check the seed against this commitment (e.g. the one draw_opened carried)")
    p.add_argument("--list-hash", help="check the list against this hash (e.g. the one draw_result carried)")
    p.add_argument("--seed", help="use this seed (hex) instead of the document's")
    p.add_argument("--entry-id", help="also check that this entry id (yours, from entry_result) is in the list")


def run(args: argparse.Namespace) -> int:
    try:
        data = load(args.source)
    except (OSError, ValueError) as e:
        print(f"verify-draw: cannot read {args.source}: {e}", file=sys.stderr)
        return 1
    report = verify(data, commitment=args.commitment, list_hash=args.list_hash, seed=args.seed,
                    entry_id=args.entry_id)
    print(report.text())
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run(parser().parse_args(argv))
