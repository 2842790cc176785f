"""`livesale demo` (what `make demo` runs): embedded defaults, a seeded live room that looks alive."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from conftest import timeout
from gateway_helpers import JSON, WsClient
from proc_helpers import ServerProc, free_port

pytestmark = pytest.mark.slow


async def test_demo_runs_a_live_room_on_embedded_defaults(tmp_path: Path) -> None:
    env = {"LIVESALE_PORT": str(free_port()), "LIVESALE_SANDBOX_PORT": str(free_port()),
           "LIVESALE_DATA_DIR": str(tmp_path / "demo"),
           "LIVESALE_DEMO_VIEWERS": "4", "LIVESALE_TICK_MS": "100"}
    # as on a fresh machine: no REDIS_URL, no DATABASE_URL, no secret (all embedded / generated)
    proc = await ServerProc.start(env, command="demo", unset=("REDIS_URL", "DATABASE_URL", "LIVESALE_SECRET"))
    try:
        line = (await proc.wait_lines("viewer page :", wait=90))[0]
        viewer_url = line.split("viewer page :", 1)[1].strip()
        assert viewer_url.endswith("/rooms/demo")
        base = viewer_url.rsplit("/rooms/", 1)[0]
        host_line = (await proc.wait_lines("host panel  :"))[0]
        assert f"{base}/host/demo#token=" in host_line
        assert (tmp_path / "demo" / "secret.key").exists()
        pay_line = (await proc.wait_lines("payments    :"))[0]
        assert "sandbox provider at http://127.0.0.1:" in pay_line

        async with aiohttp.ClientSession() as s:
            async with s.get(viewer_url) as r:
                assert r.status == 200 and "text/html" in r.headers["Content-Type"]
            async with s.get(f"{base}/api/rooms/demo") as r:
                room = await r.json()
            assert room["status"] == "live"
            assert len(room["products"]) == 4

            watcher = await WsClient.connect(s, base + "/ws", JSON)
            snap = await watcher.join("demo", timeout=timeout(10))
            assert snap["type"] == "snapshot"
            # fan teams are seeded; the simulated viewers join one: the leaderboard counts them
            assert [t["team_id"] for t in snap["teams"]["teams"]] == ["ruby", "jade", "gold"]
            if sum(r["members"] for r in snap["leaderboard"] or []) == 0:
                await watcher.wait(lambda m: m.get("type") == "tick"
                                   and sum(r["members"] for r in m.get("teams", [])) > 0, timeout(20))
            # the demo launches a flash sale at once, opening 15 s later; simulated viewers tap buy and pay
            if not snap["sales"]:
                await watcher.wait(lambda m: m.get("type") == "sale_scheduled", timeout(20))
            opened = await watcher.wait(lambda m: m.get("type") == "sale_open", timeout(40))
            sale = opened["sale"]
            sold = await watcher.wait(
                lambda m: m.get("type") == "tick" and m.get("units", {}).get(sale["sale_id"], sale["allocated"])
                < sale["allocated"], timeout(20))
            assert sold["units"][sale["sale_id"]] >= 0
            # the simulated viewers pay through the sandbox provider's page (`pay` is refused in the
            # sandbox mode): a paid purchase shows up in the room's "just bought" ticker
            bought = await watcher.wait(lambda m: m.get("type") == "tick" and bool(m.get("bought")), timeout(40))
            assert bought["bought"][0]["sale_id"] == sale["sale_id"]
            await watcher.close()
    finally:
        rc = await proc.stop()
    assert rc == 0, "\n".join(proc.lines[-30:])
