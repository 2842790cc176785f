"""The arithmetic of show reports (commerce/report_math.py): sessions from join / leave signals, the peak
of sessions open at once, watch-time buckets, median and mean, the funnel's nested steps, totals."""

from __future__ import annotations

import random

from commerce.report_math import (
    WATCH_BUCKETS, Session, SessionEvent, Totals, funnel_steps, median, peak_concurrent, sessions, totals_by,
    watch_per_viewer, watch_summary,
)


def j(user: str, ref: str, at: int) -> SessionEvent:
    return SessionEvent("join", user, ref, at)


def lv(user: str, ref: str, at: int, value: int) -> SessionEvent:
    return SessionEvent("leave", user, ref, at, value)


# -- peak -----------------------------------------------------------------------------------------------

def test_peak_of_nested_overlapping_and_touching_intervals() -> None:
    assert peak_concurrent([]) == 0
    assert peak_concurrent([(0, 10)]) == 1
    assert peak_concurrent([(0, 10), (5, 15), (7, 8)]) == 3
    assert peak_concurrent([(0, 10), (10, 20), (20, 30)]) == 1  # one ends as the next starts: no overlap
    assert peak_concurrent([(0, 10), (0, 10), (0, 10)]) == 3
    assert peak_concurrent([(5, 5)]) == 0  # an empty session is never open
    assert peak_concurrent([(10, 0)]) == 1  # reversed bounds are put right


def test_peak_matches_a_brute_force_count() -> None:
    rnd = random.Random(7)
    for _ in range(50):
        spans = [(a, a + rnd.randint(0, 30)) for a in (rnd.randint(0, 100) for _ in range(rnd.randint(0, 40)))]
        brute = max((sum(1 for s, e in spans if s <= t < e) for t in range(0, 140)), default=0)
        assert peak_concurrent(spans) == brute


# -- sessions -------------------------------------------------------------------------------------------

def test_sessions_pair_joins_and_leaves_per_user_and_session() -> None:
    got = sessions([lv("a", "s1", 5000, 4000), j("a", "s1", 1000), j("b", "s2", 2000), lv("b", "s2", 3000, 1000),
                    j("c", "s1", 1500)], open_until_ms=9000)  # c's session id equals a's: kept apart
    assert sorted(got, key=lambda s: s.user) == [
        Session("a", 1000, 5000, 4000, False), Session("b", 2000, 3000, 1000, False),
        Session("c", 1500, 9000, 7500, True)]


def test_a_rejoin_without_leave_ends_the_first_session_and_a_leave_without_join_uses_its_value() -> None:
    got = sessions([j("a", "s", 0), j("a", "s", 4000), lv("a", "s", 6000, 2000), lv("b", "t", 10_000, 3000)],
                   open_until_ms=20_000)
    assert sorted(got, key=lambda s: (s.user, s.start_ms)) == [
        Session("a", 0, 4000, 4000, False), Session("a", 4000, 6000, 2000, False),
        Session("b", 7000, 10_000, 3000, False)]


def test_an_open_session_runs_until_the_cap_and_never_backwards() -> None:
    (s,) = sessions([j("a", "s", 5000)], open_until_ms=3000)  # the room ended before this join was seen
    assert (s.start_ms, s.end_ms, s.watched_ms, s.open) == (5000, 5000, 0, True)
    assert sessions([SessionEvent("tap", "a", "", 1)], 10) == []


def test_peak_from_sessions_of_a_show() -> None:
    evs = [j("a", "1", 0), j("b", "2", 10), j("c", "3", 20), lv("a", "1", 30, 30), j("d", "4", 30),
           lv("b", "2", 40, 30), lv("c", "3", 50, 30)]
    spans = sessions(evs, open_until_ms=100)
    assert peak_concurrent((s.start_ms, s.end_ms) for s in spans) == 3
    assert watch_per_viewer(spans) == {"a": 30, "b": 30, "c": 30, "d": 70}


# -- watch time -----------------------------------------------------------------------------------------

def test_median() -> None:
    assert median([]) == 0
    assert median([3]) == 3
    assert median([5, 1, 3]) == 3
    assert median([4, 1, 3, 2]) == 2.5


def test_watch_summary_buckets_edges_median_and_mean() -> None:
    per = {"a": 0, "b": 59_999, "c": 60_000, "d": 299_000, "e": 300_000, "f": 3_600_000, "g": 7_200_000,
           "h": 1_799_000, "i": 1_800_000}
    w = watch_summary(per)
    assert [b["label"] for b in w["buckets"]] == [b[0] for b in WATCH_BUCKETS]
    assert [b["viewers"] for b in w["buckets"]] == [2, 2, 1, 1, 1, 2]
    assert w["buckets"][-1]["to_s"] is None and w["buckets"][0]["from_s"] == 0
    assert w["viewers"] == 9 and sum(b["viewers"] for b in w["buckets"]) == 9
    assert w["median_s"] == 300.0
    assert w["mean_s"] == round(sum(per.values()) / 9 / 1000, 1)
    empty = watch_summary({})
    assert empty["viewers"] == 0 and empty["median_s"] == 0 and empty["mean_s"] == 0
    assert all(b["viewers"] == 0 for b in empty["buckets"])


def test_watch_per_viewer_sums_sessions() -> None:
    spans = [Session("a", 0, 10, 10_000, False), Session("a", 20, 30, 5_000, False), Session("b", 0, 1, 1, True)]
    assert watch_per_viewer(spans) == {"a": 15_000, "b": 1}


# -- funnel ---------------------------------------------------------------------------------------------

def test_funnel_steps_count_users_and_never_grow() -> None:
    f = funnel_steps(joined=["a", "b", "c", "d"], tapped=["a", "b", "a"], reserved=["a"], paid=["a"])
    assert f == {"viewers": 4, "tapped": 2, "reserved": 1, "paid": 1}
    # a buyer who tapped over HTTP without joining, one whose held signal was lost, a payer without signals
    f = funnel_steps(joined=["a"], tapped=["a", "x"], reserved=["x"], paid=["y"])
    assert f == {"viewers": 3, "tapped": 3, "reserved": 2, "paid": 1}
    rnd = random.Random(3)
    for _ in range(100):
        pick = lambda: [f"u{rnd.randint(0, 20)}" for _ in range(rnd.randint(0, 15))]  # noqa: E731
        f = funnel_steps(pick(), pick(), pick(), pick())
        assert f["viewers"] >= f["tapped"] >= f["reserved"] >= f["paid"]


# -- totals ---------------------------------------------------------------------------------------------

def test_totals_by_key_and_currency_in_order() -> None:
    rows = [("link", 1, 2, "EUR", 200), ("direct", 3, 3, "EUR", 300), ("link", 1, 1, "USD", 150),
            ("zz", 5, 5, "EUR", 10), ("aa", 5, 5, "EUR", 10)]
    got = totals_by(rows, order=("direct", "link"))
    assert [k for k, _ in got] == ["direct", "link", "aa", "zz"]
    link = dict(got)["link"]
    assert (link.orders, link.units, link.gmv()) == (2, 3, {"EUR": 200, "USD": 150})
    assert link.wire() == {"orders": 2, "units": 3, "gmv": {"EUR": 200, "USD": 150}}
    assert [k for k, _ in totals_by([("b", 1, 1, "EUR", 1), ("a", 2, 1, "EUR", 1), ("c", 1, 9, "EUR", 1)])] == \
        ["a", "c", "b"]  # most orders, then most units, then by key
    assert Totals().wire() == {"orders": 0, "units": 0, "gmv": {}}
