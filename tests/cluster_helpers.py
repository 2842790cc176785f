"""A Redis/Valkey Cluster for the tests that need one (registered in tests/conftest.py). Not a test module.

``LIVESALE_TEST_CLUSTER_URL`` set: that cluster (a seed node's URL) is used as is, and the tests
that kill nodes skip (``killable``). Unset: one private 3-master + 3-replica ``EmbeddedCluster``
for the whole session, started only when a test first asks for ``redis_cluster`` (~2.5 s), in a
temp directory, stopped at the end of the session.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.embedded_cluster import EmbeddedCluster

CLUSTER_URL_ENV = "LIVESALE_TEST_CLUSTER_URL"


@dataclass(frozen=True)
class ExternalCluster:
    """A cluster this test run did not start: a seed URL, nothing to kill or restart."""

    url: str


TestCluster = EmbeddedCluster | ExternalCluster


@contextmanager
def cluster_env(masters: int = 3, replicas: int = 1) -> Iterator[TestCluster]:
    """The external cluster of ``LIVESALE_TEST_CLUSTER_URL``, or a private embedded one, stopped on exit."""
    url = os.environ.get(CLUSTER_URL_ENV, "")
    if url:
        yield ExternalCluster(url)
        return
    with tempfile.TemporaryDirectory(prefix="ls-cluster-") as d, \
            EmbeddedCluster(Path(d), masters, replicas) as cluster:
        yield cluster


def killable(cluster: TestCluster) -> EmbeddedCluster:
    """The cluster, when this run may kill and restart its nodes; otherwise the test is skipped."""
    if not isinstance(cluster, EmbeddedCluster):
        pytest.skip(f"{CLUSTER_URL_ENV} is an external cluster: its nodes are not ours to kill")
    return cluster


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[TestCluster]:
    with cluster_env() as cluster:
        yield cluster
