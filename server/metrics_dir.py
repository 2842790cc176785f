"""prometheus-client's multiprocess directory for ``livesale serve --workers N`` (no prometheus import here).

prometheus-client picks its value store when it is first imported: with ``PROMETHEUS_MULTIPROC_DIR`` in
the environment every process writes its counters to its own memory-mapped files in that directory,
and a scrape of any process adds them up. So the parent sets the variable (for itself and for its
gateway children) before anything imports prometheus_client, on a fresh directory: files left by an
earlier run would be counted again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["ENV", "fresh_multiprocess_dir", "process_ended"]

ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own variable, not a livesale setting


def fresh_multiprocess_dir(data_path: Path, env: dict[str, str]) -> Path:
    """Empty ``<data dir>/prometheus`` and name it in ``os.environ`` and ``env`` (the children's)."""
    path = data_path / "prometheus"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[ENV] = env[ENV] = str(path)
    return path


def process_ended(pid: int) -> None:
    """A gateway child ended: its live gauges (connections, rooms) stop counting."""
    if ENV not in os.environ:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
