"""inventory/settle_heartbeat.py: the pure verdict of `livesale settle --check`, and the heartbeat hash's parse."""

from __future__ import annotations

from inventory.settle_heartbeat import Beat, verdict

NOW = 1_700_000_000_000


def beat(consumer: str = "h-1", beat_ms: int = NOW - 1000, interval_ms: int = 5000, lag_ms: int = 0,
         pending: int = 0, behind: int = 0) -> Beat:
    return Beat(consumer=consumer, pid=1, host="h", started_ms=NOW - 60_000, beat_ms=beat_ms, interval_ms=interval_ms,
                settled=7, batches=2, dead_lettered=0, pending=pending, behind=behind, lag_ms=lag_ms, streams=3)


def test_no_worker_is_unhealthy() -> None:
    ok, line = verdict([], NOW, 60)
    assert not ok and line.startswith("unhealthy: no settlement worker alive")


def test_a_fresh_worker_within_the_bound_is_healthy() -> None:
    ok, line = verdict([beat()], NOW, 60)
    assert ok and line.startswith("ok: 1 worker alive (h-1)") and "lag 0.0 s" in line and "\n" not in line


def test_a_silent_worker_is_dead() -> None:
    ok, line = verdict([beat(beat_ms=NOW - 15_001)], NOW, 60)  # more than 3 intervals ago
    assert not ok and "no settlement worker alive" in line
    assert verdict([beat(beat_ms=NOW - 15_000)], NOW, 60)[0]


def test_lag_over_the_bound_is_unhealthy_and_the_freshest_beat_counts() -> None:
    ok, line = verdict([beat(lag_ms=120_000, pending=1)], NOW, 60)
    assert not ok and "lags 120.0 s, over the 60 s bound" in line and "1 pending" in line
    older = beat("h-2", beat_ms=NOW - 4000, lag_ms=120_000)
    ok, line = verdict([older, beat("h-1", beat_ms=NOW - 100, lag_ms=1000)], NOW, 60)
    assert ok and "2 workers alive (h-1, h-2)" in line


def test_beat_parse() -> None:
    raw = {b"consumer": b"h-1", b"host": b"h", **{k.encode(): b"5" for k in (
        "pid", "started_ms", "beat_ms", "interval_ms", "settled", "batches", "dead_lettered", "pending", "behind",
        "lag_ms", "streams")}}
    b = Beat.parse(raw)
    assert b is not None and b.consumer == "h-1" and b.lag_ms == 5
    assert Beat.parse({}) is None and Beat.parse({**raw, b"pid": b"x"}) is None
