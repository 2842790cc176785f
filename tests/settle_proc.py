"""One settlement worker in its own OS process that SIGKILLs itself at a fault point (tests only).

Usage: python tests/settle_proc.py '<json config>' with keys redis_url, database_url, consumer,
group, registry, kill_at ("before_commit" | "after_commit"), claim_idle_ms.
Exit code 3 means the fault point was never reached.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redis_helpers import redis_for  # noqa: E402

from inventory.settlement import SettlementWorker  # noqa: E402
from inventory.store import Store  # noqa: E402


async def _main(cfg: dict[str, str | int]) -> None:
    redis = redis_for(str(cfg["redis_url"]))
    store = await Store.open(str(cfg["database_url"]))

    def fault(point: str) -> None:
        if point == cfg["kill_at"]:
            os.kill(os.getpid(), signal.SIGKILL)

    worker = SettlementWorker(redis, store, consumer=str(cfg["consumer"]), group=str(cfg["group"]),
                              registry=str(cfg["registry"]), claim_idle_ms=int(cfg["claim_idle_ms"]),
                              fault=fault)
    try:
        await worker.run(burst=True)
    finally:
        await store.close()
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(_main(json.loads(sys.argv[1])))
    sys.exit(3)
