"""``make bench``'s reconnect-storm and slow-consumer steps (issue #12), the smaller versions, through the
same code as the full benchmarks (loadtest/storm.py, loadtest/slow.py):

- storm: 200 viewers on two gateway processes (private Valkey, ``livesale settle``) drop their sockets at
  one instant and reconnect with resume: every viewer is back, each answer is a ``resumed`` or a
  ``snapshot`` and the two add up to the reconnects, the replays are complete and gap-free, a first live
  event arrives after the answer, and both gateways are alive afterwards;
- slow: 200 viewers on one gateway, one run with everyone reading and one with 4 of them not reading:
  every event reaches every other viewer in both runs, none of them is closed, and the verdict line is there.

Each section renders and replaces only itself in a document."""

from __future__ import annotations

from types import ModuleType

import pytest

from loadtest import slow, storm

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300, method="thread")]

MACHINE = {"date": "today", "cpu": "cpu", "cores": 2, "python": "3", "kernel": "k", "git": "abc"}
DOC = "# Benchmarks\n\n## Checkout\n\nkept\n\n## Targets\n\nrows\n"


def _splices(module: ModuleType, sec: list[str]) -> None:
    assert sec[0] == module.START and sec[-1] == module.END
    once = module.splice(DOC, sec)
    assert once.index("## Checkout") < once.index(module.START) < once.index("## Targets")
    assert module.splice(once, sec) == once  # replaces itself, keeps the rest
    assert module.old_section(once) == sec


async def test_storm_everyone_back_and_the_gateways_alive() -> None:
    cfg = storm.plan(True, viewers=200)
    cfg.update(warm_s=1.0, after_s=1.0, back_timeout_s=60.0)
    r = await storm.run(cfg, log=print)
    assert "error" not in r, r
    assert r["joined"] == r["receiving_before"] == 200, r
    assert r["reconnects"] == r["back"] == 200 and r["all_back"] and r["failed"] == 0, r
    assert r["resumed"] + r["snapshot"] == r["reconnects"] and r["kinds_add_up"], r
    assert r["resumed"] > 0, r  # a 0-200 ms blip stays well inside the replay ring
    assert r["replayed"] == r["missed"] and r["replay_complete"], r
    assert r["gaps"] == 0 and r["dups"] == 0, r
    assert r["first_seen"] == 200 and r["first_p99_ms"] is not None and r["first_p99_ms"] >= r["first_p50_ms"], r
    assert 0 < r["all_back_s"] < 60 and r["back_p50_s"] <= r["back_p99_s"] <= r["all_back_s"], r
    assert r["all_alive"] and len(r["gateway"]) == 2, r
    for g in r["gateway"]:
        assert g["alive"] and g["connections_after"] >= 100 and g["resyncs"] == 0, g
    assert r["host"]["sent"] > 0 and r["host"]["ok"] == r["host"]["sent"], r["host"]
    assert storm.ok(r)

    sec = storm.section(r, MACHINE, "python -m loadtest.storm --viewers 200")
    text = "\n".join(sec)
    assert f"| {r['resumed']:,} / {r['snapshot']:,} |" in text, text
    _splices(storm, sec)


async def test_slow_consumers_do_not_cost_the_others_their_events() -> None:
    cfg = slow.plan(True, viewers=200, seconds=3, repeat=1)
    r = await slow.run(cfg, log=print)
    assert [x.get("kind") for x in r["runs"]] == ["A", "B"], r
    for x in r["runs"]:
        assert "error" not in x, x
        assert x["others"] == 196 and x["slow"] == 4, x
        assert x["delivered"] == x["expected"] == x["sent"] * 196 and x["all_delivered"], x
        assert x["gaps"] == 0 and x["others_closed"] == 0, x
        assert x["p99_ms"] >= x["p50_ms"] > 0, x
    b = r["runs"][1]
    assert b["slow_delivered"] == 0, b  # the designated viewers read nothing during the window
    assert b["slow_open_after_release"] + sum(b["slow_close_codes"].values()) == 4, b
    assert r["moved_ms"] is not None and r["spread_ms"] is None and r["verdict"].startswith("no spread"), r
    assert slow.ok(r)

    sec = slow.section(r, MACHINE, "python -m loadtest.slow --quick")
    text = "\n".join(sec)
    assert "p99 moved by" in text and "| 1. A |" in text and "| 2. B |" in text, text
    _splices(slow, sec)


def test_slow_verdict_compares_the_move_with_the_spread() -> None:
    runs = [{"kind": k, "p99_ms": v} for k, v in (("A", 50.0), ("B", 52.0), ("A", 55.0), ("B", 57.0), ("A", 53.0),
                                                  ("B", 51.0))]
    v = slow.verdict(runs)
    assert v["median_A"] == 53.0 and v["median_B"] == 52.0 and v["moved_ms"] == -1.0, v
    assert v["spread_ms"] == 6.0 and v["verdict"] == "within", v
    runs[1]["p99_ms"] = runs[3]["p99_ms"] = runs[5]["p99_ms"] = 80.0
    v = slow.verdict(runs)
    assert v["moved_ms"] == 27.0 and v["spread_ms"] == 5.0 and v["verdict"] == "outside", v
    assert v["line"] == "p99 moved by +27.0 ms vs spread 5.0 ms: outside"
