"""A members-only sale under a real multi-process burst: guests and members race for it.

`livesale serve` with two gateway processes (LIVESALE_WORKERS=2, guest tokens on) and four OS
processes of viewers (tests/viewer_burst_proc.py), guests and platform-signed members mixed, every
socket joined first; then every viewer taps buy at once. No guest ever holds a unit (each gets
MEMBERS_ONLY, decided before the reserve batch in whichever gateway it landed on), the members take
every unit (no oversell), and the sale's counters agree.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from commerce.identity import mint_viewer_token, verify_token
from gateway_helpers import Api, host_token, setup_room
from proc_helpers import ServerProc, free_port, viewer_burst
from server.config import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180, method="thread")]

UNITS, GUESTS, MEMBERS, PROCS = 15, 60, 40, 4


async def test_guests_and_members_race_for_a_members_only_sale(settings: Settings, redis_url: str,
                                                               database_url: str, tmp_path: Path, uid: str) -> None:
    port = free_port()
    (tmp_path / "d").mkdir()
    env = {"LIVESALE_PORT": str(port), "LIVESALE_DATA_DIR": str(tmp_path / "d"), "LIVESALE_SECRET": settings.secret,
           "REDIS_URL": redis_url, "DATABASE_URL": database_url, "LIVESALE_WORKERS": "2",
           "LIVESALE_GUEST_TOKENS": "1", "LIVESALE_GUEST_TOKEN_RATE": "100000", "LIVESALE_BUY_RATE": "100"}
    server = await ServerProc.start(env)
    try:
        await server.wait_lines("livesale listening on", 2)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            api = Api(session, base)
            host = host_token(settings.secret)
            room = uid + "b"
            await setup_room(api, host, room, products=1)
            await api.ok("POST", f"/api/rooms/{room}/actions/go_live", host, {}, 200)
            guests = []
            for i in range(GUESTS):
                out = await api.ok("POST", "/api/viewer-token", json={"name": f"g{i}"}, status=201)
                assert verify_token(settings.secret, out["token"]).guest
                guests.append((out["token"], "guest"))
            members = [(mint_viewer_token(settings.secret, f"m{i}", user=f"{uid}-m{i}")[0], "member")
                       for i in range(MEMBERS)]
            viewers = guests + members
            random.Random(uid).shuffle(viewers)
            sale = await api.ok("POST", f"/api/rooms/{room}/sales", host,
                                {"product_id": "p0", "units": UNITS, "per_user_limit": 1, "members_only": True,
                                 "starts_in_s": 0, "duration_s": 120}, 201)
            results = await viewer_burst(base, room, sale["sale_id"], viewers, PROCS)
            assert len(results) == len(viewers)
            by_kind = Counter((kind, code) for kind, code, _, _ in results)
            assert by_kind[("guest", "MEMBERS_ONLY")] == GUESTS, by_kind          # no guest got anything else
            assert by_kind[("member", "RESERVED")] == UNITS, by_kind              # every unit to a member
            assert by_kind[("member", "SOLD_OUT")] == MEMBERS - UNITS, by_kind
            holds = {hold for kind, code, hold, _ in results if code == "RESERVED"}
            assert len(holds) == UNITS
            counters = await api.ok("GET", f"/api/sales/{sale['sale_id']}", status=200)
            assert counters["held"] == UNITS and counters["units_left"] == 0 and counters["sold"] == 0, counters
    finally:
        await server.stop(30)
