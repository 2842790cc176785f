"""server/metrics.py moves plain counters into Prometheus by deltas: the result is what observing /
incrementing each value one at a time would give."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from commerce.meters import LATENCY_BUCKETS, BuyMeter
from server.metrics import Metrics


def test_flushed_histogram_equals_observing_each_value() -> None:
    rng = random.Random(7)
    values = [rng.choice((0.0, 0.0005, 0.001, 7.0)) if i % 5 == 0 else rng.uniform(0, 0.3) for i in range(500)]
    metrics = Metrics()
    meter = BuyMeter()
    metrics.buys = meter
    for i, v in enumerate(values):
        meter.answered("RESERVED" if i % 3 else "SOLD_OUT", v)
        if i % 97 == 0:
            metrics.flush()  # several flushes: deltas, never a value counted twice
    metrics.flush()
    metrics.flush()
    ref_registry = CollectorRegistry()
    ref = Histogram("livesale_buy_latency_seconds", "x", buckets=LATENCY_BUCKETS, registry=ref_registry)
    for v in values:
        ref.observe(v)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {(s.name, s.labels.get("le", "")): s.value for f in registry.collect() for s in f.samples
                if f.name == "livesale_buy_latency_seconds" and not s.name.endswith("_created")}
    got, want = samples(metrics.registry), samples(ref_registry)
    assert got.keys() == want.keys()
    for k in want:
        assert abs(got[k] - want[k]) < 1e-9, (k, got[k], want[k])
    text = generate_latest(metrics.registry).decode()
    assert f'livesale_buy_results_total{{code="RESERVED"}} {float(sum(1 for i in range(500) if i % 3))}' in text
