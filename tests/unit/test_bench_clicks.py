"""loadtest/clicks.py: the issue #14 verdicts from the @e1 medians, and the section they are written into."""

from __future__ import annotations

from typing import Any

from loadtest import clicks


def run(cpu: float, steady: float, p99: float, clicks_: int = 200_000, results: int = 200_000) -> dict[str, Any]:
    return {"server_us_per_click": cpu, "clicks_per_s": steady * 0.985, "achieved_rate": 19_950,
            "steady_answered_per_s": steady, "steady_offered_per_s": 20_000 if steady > 15_000 else 10_000,
            "target_rate": 20_000 if steady > 15_000 else 10_000, "p50_ms": 5.0,
            "p99_ms": p99, "clicks": clicks_, "results": results, "oversell": False,
            "engine": {"engine_usec_per_click": 20.0}, "core_busy": {0: 0.9, 1: 0.8}}


def rows(r20: list[dict[str, Any]], r10: list[dict[str, Any]]) -> dict[str, Any]:
    return {"rate20k@e1": {"runs": r20, "summary": clicks.summarize(r20)},
            "rate10k@e1": {"runs": r10, "summary": clicks.summarize(r10)}}


def test_met_on_the_medians() -> None:
    t = clicks.targets(rows([run(44, 19_900, 300), run(48, 20_010, 200), run(60, 15_000, 900)],
                            [run(50, 9_900, 80), run(50, 9_900, 95), run(50, 9_900, 400)]))
    assert [x["met"] for x in t] == [True, True]
    assert "48.0 µs/click" in t[0]["measured"] and "19,900 answered/s while 20,000/s were offered" in t[0]["measured"]


def test_missed_when_a_click_is_unanswered_or_too_slow_or_too_costly() -> None:
    unanswered = clicks.targets(rows([run(40, 19_900, 50, results=199_999)], [run(40, 9_990, 50, results=99_000)]))
    assert [x["met"] for x in unanswered] == [False, False]
    costly = clicks.targets(rows([run(51, 19_900, 50)], [run(40, 9_990, 101)]))
    assert [x["met"] for x in costly] == [False, False]
    not_sustained = clicks.targets(rows([run(40, 19_750, 50)], [run(40, 9_990, 99)]))
    assert [x["met"] for x in not_sustained] == [False, True]


def test_section_has_every_row_the_floor_and_the_verdicts() -> None:
    r = {"quick": False, "rows": rows([run(44, 19_900, 300)] * 3, [run(50, 9_900, 80)] * 3),
         "floor": {"config": {"conns": 8000, "rate": 20000.0, "seconds": 10.0},
                   "results": [{"kind": "raw", "conns": 8000, "offered_per_s": 20000.0, "answered_per_s": 19990.0,
                                "cpu_us_per_click": 17.0, "kernel_us_per_click": 12.0, "user_us_per_click": 5.0,
                                "p50_ms": 0.1, "p99_ms": 0.3, "core0_busy": 0.4, "core1_busy": 0.9}]}}
    r["targets"] = clicks.targets(r["rows"])
    text = "\n".join(clicks.section(r, {"date": "2026-11-26 00:00 UTC", "checkout": "abc1234", "cpu": "x",
                                        "cores": 2, "python": "3.11", "kernel": "6"}, "python -m loadtest.bench"))
    assert text.startswith(clicks.START) and text.endswith(clicks.END)
    assert "`rate20k@e1`" in text and "`rate10k@e1`" in text and "| raw | 8,000 |" in text
    assert text.count("| met |") == 2
    doc = clicks.splice("# Benchmarks\n\n## Notes\n- n\n", text.splitlines())
    assert clicks.old_section(doc) == text.splitlines()


def test_steady_rates_count_only_the_window_where_clicks_are_offered() -> None:
    from loadtest.checkout import steady_rates
    first, last = 1_000_050.0, 1_011_000.0  # ms; window: bins from 1,001,100 (ceil) to 1,011,000
    answered = [{10_000: 999, 10_011: 2_000, 10_012: 1_990}, {10_050: 2_010, 10_109: 2_000, 10_110: 7}]
    clicked = [{10_011: 2_000, 10_109: 2_000}, {10_012: 2_000, 10_050: 2_000}]
    r = steady_rates(answered, clicked, first, last)
    assert r["steady_window_s"] == 9.9
    assert r["steady_answered_per_s"] == round((2_000 + 1_990 + 2_010 + 2_000) / 9.9)
    assert r["steady_offered_per_s"] == round(8_000 / 9.9)
    assert steady_rates(answered, clicked, first, first + 1_500)["steady_answered_per_s"] is None
