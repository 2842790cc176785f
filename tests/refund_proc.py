"""Refund one settled order in its own OS process and SIGKILL it at a fault point (tests only).

Usage: python tests/refund_proc.py '<json config>' with keys redis_url, database_url, order_id,
merchant, kill_at ("after_record" | "after_restock" | "after_money"). Exit code 3: the fault point
was never reached.
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

from commerce.funnel import Funnel  # noqa: E402
from commerce.identity import Identity  # noqa: E402
from commerce.order_refunds import OrderRefunds  # noqa: E402
from commerce.payments.service import Payments  # noqa: E402
from commerce.requests import RefundOrder  # noqa: E402
from commerce.room_bus import RoomBus  # noqa: E402
from inventory.scripts import Inventory  # noqa: E402
from inventory.store import Store  # noqa: E402


async def _main(cfg: dict[str, str]) -> None:
    redis = redis_for(cfg["redis_url"])
    raw = redis_for(cfg["redis_url"], decode=False)
    store = await Store.open(cfg["database_url"])
    inventory = Inventory(redis)
    bus = RoomBus(raw)
    await bus.load_script()

    def fault(point: str) -> None:
        if point == cfg["kill_at"]:
            os.kill(os.getpid(), signal.SIGKILL)

    refunds = OrderRefunds(store, inventory, bus, Payments(store, inventory, bus, Funnel(bus)), fault=fault)
    try:
        await refunds.refund(Identity(user=cfg["merchant"], name="m", role="merchant"), cfg["order_id"],
                             RefundOrder(restock=True, reason="returned by the buyer"))
    finally:
        await store.close()
        await redis.aclose()
        await raw.aclose()


if __name__ == "__main__":
    asyncio.run(_main(json.loads(sys.argv[1])))
    sys.exit(3)
