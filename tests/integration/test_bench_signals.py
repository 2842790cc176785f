"""``make bench``'s interest-signal step (issue "Growth and data", Done-when), the smaller version: 300
viewers on two gateway processes (``livesale serve`` x 2 + ``livesale settle``, private Valkey, a fresh
SQLite file or the suite's DATABASE_URL) each send one ``view`` a second for 5 s through the same code
as the 5,000-viewer benchmark (loadtest/signals.py, quick mode): the SQL count of ``viewed`` signals
for the run's room equals the signals sent, none was refused, and the lag and CPU figures are there;
the document's section renders them and replaces only itself."""

from __future__ import annotations

import os

import pytest

from loadtest import signals

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300, method="thread")]


async def test_every_view_sent_is_a_row_in_sql() -> None:
    cfg = signals.plan(True)
    cfg["database_url"] = os.environ.get("DATABASE_URL", "")
    r = await signals.run(cfg, log=print)
    assert r["joined"] == r["viewers"] == 300, r
    assert r["sent"] == 300 * 5 and r["rejected"] == 0, r
    assert r["sql_count"] == r["sent"] and r["equal"] is True, r
    assert r["complete_after_s"] is not None and r["complete_after_s"] >= 0, r
    assert r["gateway_us_per_signal"] > 0 and r["gateway_us_per_signal_gross"] >= r["gateway_us_per_signal"], r
    assert r["sink_us_per_signal"] > 0, r
    assert r["lag_p99_max_ms"] > 0 and r["lag_p99_final_ms"] > 0, r
    assert r["sink_final"]["failures"] == 0 and r["sink_final"]["malformed"] == 0, r

    machine = {"date": "today", "cpu": "cpu", "cores": 2, "python": "3", "kernel": "k", "git": "abc"}
    sec = signals.section(r, machine, "python -m loadtest.signals --quick")
    text = "\n".join(sec)
    assert sec[0] == signals.START and sec[-1] == signals.END
    assert f"{r['sql_count']:,}" in text and "| yes |" in text, text
    doc = "# Benchmarks\n\n## Checkout\n\nkept\n\n## Targets\n\nrows\n"
    once = signals.splice(doc, sec)
    assert once.index("## Checkout") < once.index(signals.START) < once.index("## Targets")
    assert signals.splice(once, sec) == once  # replaces itself, keeps the rest
    assert signals.old_section(once) == sec
