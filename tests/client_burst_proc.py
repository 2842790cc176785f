"""One OS process of a buy burst through the Python client package (run by tests/e2e/test_client_burst.py;
not a test module).

Protocol over stdin/stdout, one JSON line each way:
  parent -> child  config line: {"base": "http://127.0.0.1:P", "room", "sale", "tokens": [token, ...]}
  child  -> parent "READY"   (every livesale_client.aio client connected and joined)
  parent -> child  "GO"      (every process is ready: each client buys one unit at once)
  child  -> parent result line: {"results": [[code, hold, units_left], ...]}
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from livesale_client import aio  # noqa: E402


async def _main() -> None:
    loop = asyncio.get_running_loop()
    cfg = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    clients = await asyncio.gather(*(aio.connect(cfg["base"], room=cfg["room"], token=tok, clock_samples=1,
                                                 max_queue=100, request_timeout=60.0, timeout=60.0)
                                     for tok in cfg["tokens"]))
    try:
        print("READY", flush=True)
        go = await loop.run_in_executor(None, sys.stdin.readline)
        if go.strip() != "GO":
            raise SystemExit(f"expected GO, got {go!r}")
        answers = await asyncio.gather(*(c.buy(cfg["sale"]) for c in clients))
        out = [[a.code, a.hold, a.units_left] for a in answers]
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    print(json.dumps({"results": out}), flush=True)


if __name__ == "__main__":
    asyncio.run(_main())
