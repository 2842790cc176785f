"""``make bench``'s single-server vs cluster step (issue #12), the smaller version: one round of 1 s per
mode with two client processes through the same code as the full step (loadtest/cluster.py): one server
and a 3-master cluster (and the hot-sale rows) each reserved something, the CPU figures are there, and
the document's section renders them and replaces only itself."""

from __future__ import annotations

import pytest

from loadtest import cluster as clbench

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300, method="thread")]


def test_single_and_cluster_side_by_side() -> None:
    p = clbench.plan(True, seconds=1.0, warmup=0.5, sales=3, batch=64,
                     modes=["single", "cluster", "single_hot", "cluster_hot"])
    r = clbench.measure(p, log=print)
    assert set(r["modes"]) == {"single", "cluster", "single_hot", "cluster_hot"}, r
    for mode, s in r["modes"].items():
        assert "error" not in s and s["failed_runs"] == 0, (mode, s)
        assert s["reserved"] > 0 and s["reservations_per_s"] > 0 and s["calls"] > 0, (mode, s)
        assert s["refused"] == 0 and not s["errors"], (mode, s)
        assert s["engine_reserved_total"] >= s["reserved"], (mode, s)  # the engine holds what clients counted
        assert s["engine_us_per_reservation"] > 0 and s["client_us_per_reservation"] > 0, (mode, s)
    assert len(r["modes"]["single"]["engine_cpu_s"]) == 1
    assert len(r["modes"]["cluster"]["engine_cpu_s"]) == 3
    assert r["modes"]["cluster"]["sales_per_master"] == [1, 1, 1]  # three sales, one per master
    assert r["modes"]["cluster_hot"]["sales_per_master"] == [1]
    assert any(v.startswith("Rate: the 3-master cluster did") for v in r["verdict"]), r["verdict"]

    machine = {"date": "today", "cpu": "cpu", "cores": 2, "python": "3", "kernel": "k", "git": "abc"}
    sec = clbench.section(r, machine, "python -m loadtest.cluster --quick")
    text = "\n".join(sec)
    assert sec[0] == clbench.START and sec[-1] == clbench.END
    assert f"{r['modes']['cluster']['reservations_per_s']:,}" in text and "| cluster, 3 masters |" in text, text
    doc = "# Benchmarks\n\n## Checkout\n\nkept\n\n## Targets\n\nrows\n"
    once = clbench.splice(doc, sec)
    assert once.index("## Checkout") < once.index(clbench.START) < once.index("## Targets")
    assert clbench.splice(once, sec) == once  # replaces itself, keeps the rest
    assert clbench.old_section(once) == sec


def test_sales_spread_evenly_over_three_slot_ranges() -> None:
    from inventory.keys import sale_keys
    from inventory.redis_link import slot_of

    ids = clbench.balanced_sales(30)
    assert len(set(ids)) == 30
    thirds = [min(2, slot_of(sale_keys(s).sale) * 3 // clbench.SLOTS) for s in ids]
    assert [thirds.count(i) for i in range(3)] == [10, 10, 10]
