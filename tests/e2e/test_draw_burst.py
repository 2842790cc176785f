"""A lucky draw under a real multi-process burst, checked from its published data alone.

`livesale serve` with two gateway processes (LIVESALE_WORKERS=2: both run the draw's deadline, one
holds the draw's lease at a time) and 2,000 viewers over four OS processes
(tests/act_burst_proc.py, proc_helpers.ActBurst), every socket joined before the draw opens and held
until it is over.
The host opens a draw of 10 pool prizes; every viewer enters at once (ENTERED each, one entry id
each); when entries close all 2,000 are present, so all 2,000 are in the list; ``draw_result`` reaches
every socket, each of the 10 winners gets its ``draw_won`` with a hold, and ``livesale verify-draw``
(its own process) agrees with ``GET /api/draws/{draw}/entrants``, while a tampered copy does not.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from commerce.identity import mint_merchant_token, mint_viewer_token
from conftest import timeout
from gateway_helpers import Api, host_token
from proc_helpers import ActBurst, ServerProc, free_port
from server.config import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240, method="thread")]

ROOT = Path(__file__).resolve().parents[2]
VIEWERS, PROCS, WINNERS, ENTRY_S = 2000, 4, 10, 12


def livesale() -> list[str]:
    """The installed ``livesale`` command next to this interpreter (a virtualenv's), else the module."""
    exe = Path(sys.executable).parent / "livesale"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "server.cli"]


async def run(cmd: list[str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)},
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout(60))
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_two_thousand_entrants_and_a_draw_anyone_can_check(settings: Settings, redis_url: str,
                                                                 database_url: str, tmp_path: Path, uid: str) -> None:
    started = time.monotonic()
    port = free_port()
    (tmp_path / "d").mkdir()
    env = {"LIVESALE_PORT": str(port), "LIVESALE_DATA_DIR": str(tmp_path / "d"), "LIVESALE_SECRET": settings.secret,
           "REDIS_URL": redis_url, "DATABASE_URL": database_url, "LIVESALE_WORKERS": "2",
           "LIVESALE_PAYMENT_MODE": "instant", "LIVESALE_TICK_MS": "500"}
    server = await ServerProc.start(env)
    burst: ActBurst | None = None
    try:
        await server.wait_lines("livesale listening on", 2)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            api = Api(session, base)
            host = host_token(settings.secret)
            merchant = mint_merchant_token(settings.secret, f"m-{uid}")
            room, pool = f"r{uid}", f"pl{uid}"
            await api.ok("POST", "/api/rooms", host, {"room_id": room, "title": "Draw burst"}, 201)
            await api.ok("POST", f"/api/rooms/{room}/products", host,
                         {"product_id": "p0", "sku": f"SKU-{uid}", "title": "Prize", "unit_price": 999}, 201)
            await api.ok("POST", "/api/pools", merchant, {"pool_id": pool, "sku": f"SKU-{uid}", "title": "Prize",
                                                         "unit_price": 999, "units": WINNERS}, 201)
            await api.ok("POST", f"/api/rooms/{room}/actions/go_live", host, {}, 200)
            users = [f"{uid}-v{i}" for i in range(VIEWERS)]
            enter = {"type": "enter_draw", "draw": "{draw}"}  # the draw's id is filled in at GO
            viewers = [(mint_viewer_token(settings.secret, f"v{i}", user=u)[0], u, [enter])
                       for i, u in enumerate(users)]

            # every viewer connected and joined (over four processes) before the draw opens, held until it is over
            burst = await ActBurst.start(base, room, viewers, PROCS, hold=True, collect={"draw_result", "draw_won"},
                                         answer_s=45, ready_s=90)

            async with session.ws_connect(base + "/ws", protocols=("livesale.v1.json",)) as ws:
                await ws.send_json({"type": "join", "room": room, "token": host})

                async def wait_for(kind: str, wait: float) -> dict[str, Any]:
                    async with asyncio.timeout(timeout(wait)):
                        while True:
                            m = await ws.receive_json()
                            if m.get("type") == kind:
                                return m
                await wait_for("snapshot", 10)
                await ws.send_json({"type": "create_draw", "rid": "c", "title": "Ten prizes", "winners": WINNERS,
                                    "entry_s": ENTRY_S, "prize": {"pool": pool}})
                ok = await wait_for("ok", 10)
                draw = ok["draw"]
                answers = await burst.go(wait_s=60, fill={"draw": draw["draw_id"]})  # one enter_draw each, at once
                entries: dict[str, str] = {}  # user -> entry id
                for (_tok, user, _msgs), (kind, (answer,)) in zip(viewers, answers, strict=True):
                    assert kind == user and answer.get("type") == "entry_result", (user, answer)
                    assert answer.get("code") == "ENTERED" and answer.get("entry_id"), (user, answer)
                    entries[user] = answer["entry_id"]
                result = (await wait_for("draw_result", ENTRY_S + 30))["draw"]

            assert result["entrants"] == VIEWERS and len(result["winner_ids"]) == WINNERS, result
            listed = await api.ok("GET", f"/api/draws/{draw['draw_id']}/entrants")
            assert listed["commitment"] == draw["commitment"] and listed["k"] == WINNERS
            assert len(listed["entrants"]) == VIEWERS and listed["winner_ids"] == result["winner_ids"]
            assert hashlib.sha256(bytes.fromhex(listed["seed"])).hexdigest() == draw["commitment"]
            # every socket saw the result; each winner got its prize hold, nobody else did
            winners = set(listed["winner_ids"])
            collected = await burst.release([{"draw_result", "draw_won"} if entries[u] in winners else {"draw_result"}
                                             for u in users], wait_s=60)
            assert len(collected) == VIEWERS
            won: dict[str, str] = {}  # entry id -> hold
            for user, got in zip(users, collected, strict=True):
                assert all(m["type"] != "CLOSED_SOCKET" for m in got), (user, got)  # connected until the end
                results = [m["draw"] for m in got if m["type"] == "draw_result"]
                assert results and all(r["draw_id"] == draw["draw_id"] and r["winner_ids"] == result["winner_ids"]
                                       for r in results), (user, got)
                for m in got:
                    if m["type"] == "draw_won":
                        assert m["entry_id"] == entries[user] and m["hold"], (user, m)
                        won[m["entry_id"]] = m["hold"]
            assert sorted(entries.values()) == listed["entrants"]  # one entry id each, all of them listed
            assert len(set(entries.values())) == VIEWERS
            assert set(won) == winners and len(set(won.values())) == WINNERS

        # the published data, checked by the standalone checker in its own process
        doc = tmp_path / "entrants.json"
        doc.write_text(json.dumps(listed))
        rc, out = await run([*livesale(), "verify-draw", str(doc), "--commitment", draw["commitment"],
                             "--list-hash", result["list_hash"]])
        assert rc == 0 and "VERIFIED" in out and "NOT VERIFIED" not in out, out
        rc, out = await run([sys.executable, "-m", "verify_draw", f"{base}/api/draws/{draw['draw_id']}/entrants",
                             "--commitment", draw["commitment"]])
        assert rc == 0, out
        tampered = dict(listed)
        swapped = listed["entrants"][1:] + ["e-ffffffffffffffff"]  # one entrant out, a made-up one in
        tampered["entrants"] = sorted(swapped)
        doc.write_text(json.dumps(tampered))
        rc, out = await run([*livesale(), "verify-draw", str(doc), "--commitment", draw["commitment"]])
        assert rc == 1 and "NOT VERIFIED" in out, out
        doc.write_text(json.dumps({**listed, "list_hash": hashlib.sha256(
            "\n".join(tampered["entrants"]).encode()).hexdigest(), "entrants": tampered["entrants"]}))
        rc, out = await run([*livesale(), "verify-draw", str(doc), "--list-hash", result["list_hash"]])
        assert rc == 1 and "NOT VERIFIED" in out, out  # a list fitted to its own hash fails the published one
    finally:
        if burst is not None:
            await burst.aclose()
        await server.stop(30)
        assert time.monotonic() - started < 240
