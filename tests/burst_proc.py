"""One OS process of a reserve burst (run by tests/e2e/test_inventory_burst.py; not a test module).

Protocol over stdin/stdout, one JSON line each way:
  parent -> child  config line: {"url", "sale_id", "mode": "single"|"batch", "batch": n,
                                 "max_qty", "max_connections", "requests": [[user, qty, request_id], ...]}
  child  -> parent "READY"   (connected, scripts loaded)
  parent -> child  "GO"      (every process is ready: fire the whole burst at once)
  child  -> parent result line: {"results": [[request_id, user, qty, code, hold_id, available, user_units]]}

Each process has its own event loop, its own redis client (tests/redis_helpers.py) and fires
every request with one asyncio.gather, so the burst really is concurrent on the server.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redis_helpers import redis_for  # noqa: E402

from inventory.domain import ReserveRequest  # noqa: E402
from inventory.scripts import Inventory  # noqa: E402


async def _main() -> None:
    loop = asyncio.get_running_loop()
    cfg = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    redis = redis_for(cfg["url"])  # a bounded blocking pool (or a cluster client: LIVESALE_TEST_REDIS)
    try:
        inv = Inventory(redis, max_qty=cfg.get("max_qty", 100))
        await inv.load()
        await redis.ping()
        print("READY", flush=True)
        go = await loop.run_in_executor(None, sys.stdin.readline)
        if go.strip() != "GO":
            raise SystemExit(f"expected GO, got {go!r}")
        reqs = [ReserveRequest(user_id=u, qty=q, request_id=r) for u, q, r in cfg["requests"]]
        sale = cfg["sale_id"]
        if cfg["mode"] == "single":
            results = await asyncio.gather(*(inv.reserve(sale, r.user_id, r.qty, r.request_id) for r in reqs))
        else:
            size = cfg["batch"]
            chunks = [reqs[i:i + size] for i in range(0, len(reqs), size)]
            per_chunk = await asyncio.gather(*(inv.reserve_many(sale, c) for c in chunks))
            results = [res for chunk in per_chunk for res in chunk]
        out = [[r.request_id, r.user_id, r.qty, res.code.value, res.hold_id, res.available, res.user_units]
               for r, res in zip(reqs, results, strict=True)]
        print(json.dumps({"results": out}), flush=True)
    finally:
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(_main())
