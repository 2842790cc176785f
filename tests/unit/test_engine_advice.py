"""inventory/engine_check.py: which engine settings undermine livesale's guarantees (pure verdicts)."""

from __future__ import annotations

import pytest

from inventory.engine_check import advice


@pytest.mark.parametrize(("conf", "cluster", "codes"), [
    ({"maxmemory": "0", "maxmemory-policy": "allkeys-lru"}, False, []),           # no limit: never evicts
    ({"maxmemory": "104857600", "maxmemory-policy": "noeviction"}, False, []),
    ({"maxmemory": "104857600", "maxmemory-policy": "allkeys-lru"}, False, ["EVICTION_POLICY"]),
    ({"maxmemory": "104857600", "maxmemory-policy": "volatile-ttl"}, False, ["EVICTION_POLICY"]),  # holds have TTLs
    ({"maxmemory-policy": "allkeys-lru"}, False, []),                              # maxmemory not readable
    ({}, True, []),                                                                # CONFIG refused
    ({"cluster-require-full-coverage": "yes"}, False, []),                         # not a cluster
    ({"cluster-require-full-coverage": "no"}, True, []),
    ({"cluster-require-full-coverage": "yes", "maxmemory": "1", "maxmemory-policy": "allkeys-random"}, True,
     ["EVICTION_POLICY", "FULL_COVERAGE"]),
])
def test_advice(conf: dict[str, str], cluster: bool, codes: list[str]) -> None:
    found = advice("h:1", conf, cluster)
    assert [w.code for w in found] == codes
    assert all(w.node == "h:1" and w.message for w in found)
