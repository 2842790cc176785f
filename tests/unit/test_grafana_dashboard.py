"""docs/grafana-livesale.json: every PromQL query names only metrics the server exports (from the
metrics registry of a process; histogram _bucket/_sum/_count series allowed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from server.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-livesale.json"
PROMQL_WORDS = {"sum", "max", "min", "avg", "by", "without", "rate", "irate", "increase", "histogram_quantile",
                "le", "on", "ignoring", "and", "or", "unless", "count", "topk"}


def exported() -> set[str]:
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', "", expr)            # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)           # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)          # ranges
    expr = re.sub(r"by \([^)]*\)", "", expr)        # grouping labels
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if w not in PROMQL_WORDS}


def test_every_query_names_exported_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    names = exported()
    assert all(n.startswith("livesale_") for n in names), sorted(names)
    queries = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(queries) >= 15
    for q in queries:
        used = metric_names(q)
        assert used, q
        assert used <= names, (q, sorted(used - names))


def test_the_dashboard_covers_the_brief() -> None:
    text = DASHBOARD.read_text()
    for name in ("livesale_websocket_connections", "livesale_rooms_loaded", "livesale_deliveries_total",
                 "livesale_buy_results_total", "livesale_buy_latency_seconds_bucket", "livesale_reserve_batch_size",
                 "livesale_reserve_redis_seconds_bucket", "livesale_settlement_lag_seconds",
                 "livesale_dead_letter_entries", "livesale_redis_errors_total", "livesale_db_errors_total",
                 "livesale_hold_expiries_total"):
        assert name in text, name
