"""The arithmetic of a show report (commerce/reports.py), pure: sessions from join / leave signals, the
peak of sessions open at once, per-viewer watch time in buckets, median and mean, the funnel as nested
sets of users, totals per key. No I/O; unit-tested in tests/unit/test_report_math.py."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WATCH_BUCKETS", "SessionEvent", "Session", "sessions", "peak_concurrent", "watch_per_viewer",
           "watch_summary", "median", "funnel_steps", "Totals", "totals_by"]

# (label, from seconds inclusive, to seconds exclusive; None = no upper bound)
WATCH_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("<1 min", 0, 60), ("1-5 min", 60, 300), ("5-15 min", 300, 900), ("15-30 min", 900, 1800),
    ("30-60 min", 1800, 3600), (">60 min", 3600, None),
)


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A ``join`` or ``leave`` signal: ``ref`` the session, ``value`` the ms watched (leave)."""
    kind: str  # "join" | "leave"
    user: str
    ref: str
    at_ms: int
    value: int = 0


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    start_ms: int
    end_ms: int
    watched_ms: int  # a closed session: its leave's value; an open one: from its join to the cap
    open: bool       # no leave recorded (still watching, or its leave was lost)


def sessions(events: Iterable[SessionEvent], open_until_ms: int) -> list[Session]:
    """Pair each session's joins and leaves (keyed by user and session id, in time order).

    A join followed by its leave is one session. A join followed by another join of the same session
    (the socket switched rooms and came back, and a leave was lost) ends at that next join. A leave
    without a join (the join is older than what SQL keeps) starts ``value`` ms before it. A join
    without a leave runs until ``open_until_ms`` (now, or the room's end when it ended)."""
    by_key: dict[tuple[str, str], list[SessionEvent]] = {}
    for e in events:
        if e.kind in ("join", "leave"):
            by_key.setdefault((e.user, e.ref), []).append(e)
    out: list[Session] = []
    for (user, _ref), evs in by_key.items():
        evs.sort(key=lambda e: (e.at_ms, 0 if e.kind == "join" else 1))
        opened: int | None = None
        for e in evs:
            if e.kind == "join":
                if opened is not None:
                    out.append(Session(user, opened, e.at_ms, e.at_ms - opened, False))
                opened = e.at_ms
            else:
                watched = max(0, e.value)
                start = opened if opened is not None else e.at_ms - watched
                out.append(Session(user, min(start, e.at_ms), e.at_ms, watched, False))
                opened = None
        if opened is not None:
            end = max(opened, open_until_ms)
            out.append(Session(user, opened, end, end - opened, True))
    return out


def peak_concurrent(intervals: Iterable[tuple[int, int]]) -> int:
    """The most intervals [start, end) open at one instant; one that ends when another starts does
    not overlap it."""
    edges: list[tuple[int, int]] = []
    for start, end in intervals:
        if end < start:
            start, end = end, start
        edges.append((start, 1))
        edges.append((end, -1))
    edges.sort()  # at one instant, -1 (an end) sorts before +1 (a start)
    cur = best = 0
    for _, d in edges:
        cur += d
        best = max(best, cur)
    return best


def watch_per_viewer(items: Iterable[Session]) -> dict[str, int]:
    """Each viewer's total watch time (ms) over their sessions."""
    out: dict[str, int] = {}
    for s in items:
        out[s.user] = out.get(s.user, 0) + max(0, s.watched_ms)
    return out


def median(values: Sequence[float]) -> float:
    """The median (the mean of the two middle values for an even count); 0 for none."""
    if not values:
        return 0.0
    v = sorted(values)
    mid = len(v) // 2
    return float(v[mid]) if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def watch_summary(per_viewer_ms: Mapping[str, int]) -> dict[str, Any]:
    """Viewers per watch-time bucket, with the median and mean in seconds (one decimal)."""
    secs = [ms / 1000 for ms in per_viewer_ms.values()]
    counts = [0] * len(WATCH_BUCKETS)
    for s in secs:
        for i, (_, lo, hi) in enumerate(WATCH_BUCKETS):
            if s >= lo and (hi is None or s < hi):
                counts[i] += 1
                break
    return {
        "viewers": len(secs),
        "buckets": [{"label": label, "from_s": lo, "to_s": hi, "viewers": n}
                    for (label, lo, hi), n in zip(WATCH_BUCKETS, counts, strict=True)],
        "median_s": round(median(secs), 1),
        "mean_s": round(sum(secs) / len(secs), 1) if secs else 0.0,
    }


def funnel_steps(joined: Iterable[str], tapped: Iterable[str], reserved: Iterable[str],
                 paid: Iterable[str]) -> dict[str, int]:
    """Unique users per step, each step counting the users who reached at least that step: a payer
    counts as reserved and tapped, a buyer who never joined the room's socket (HTTP) as a viewer. So
    viewers >= tapped >= reserved >= paid holds whatever signals were lost or never sent."""
    p = set(paid)
    r = set(reserved) | p
    t = set(tapped) | r
    v = set(joined) | t
    return {"viewers": len(v), "tapped": len(t), "reserved": len(r), "paid": len(p)}


@dataclass(slots=True)
class Totals:
    """Orders, units and GMV (minor units per currency) of one group, kept per currency too."""
    per_currency: dict[str, list[int]] = field(default_factory=dict)  # currency -> [orders, units, total]

    def add(self, orders: int, units: int, currency: str, total: int) -> None:
        acc = self.per_currency.setdefault(currency, [0, 0, 0])
        acc[0] += orders
        acc[1] += units
        acc[2] += total

    @property
    def orders(self) -> int:
        return sum(v[0] for v in self.per_currency.values())

    @property
    def units(self) -> int:
        return sum(v[1] for v in self.per_currency.values())

    def gmv(self) -> dict[str, int]:
        return {c: v[2] for c, v in sorted(self.per_currency.items())}

    def wire(self) -> dict[str, Any]:
        return {"orders": self.orders, "units": self.units, "gmv": self.gmv()}


def totals_by(rows: Iterable[tuple[str, int, int, str, int]], order: Sequence[str] = ()) -> list[tuple[str, Totals]]:
    """(key, orders, units, currency, total) rows summed per key. Keys named in ``order`` come first in
    that order, the others after them by orders, then units, descending, then by key."""
    acc: dict[str, Totals] = {}
    for key, n, units, currency, total in rows:
        acc.setdefault(key, Totals()).add(n, units, currency, total)
    rank = {k: i for i, k in enumerate(order)}
    return sorted(acc.items(), key=lambda kv: (rank.get(kv[0], len(rank)), -kv[1].orders, -kv[1].units, kv[0]))
