"""A coupon drop under a real multi-process burst (issue "Interaction", Done-when): 5,000 viewers on
several OS processes, joined to the room over two gateway processes, tap "claim" on a drop of 100
coupons at once. Exactly 100 are claimed, by 100 distinct viewers; every other viewer is told why
(ALL_CLAIMED); a second claim by a winner answers ALREADY_CLAIMED and changes nothing; the drop's
counts, the claims in Redis and the winners' wallets agree; the drop ends with `coupon_drop_ended`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from redis_helpers import redis_for

from commerce.identity import mint_viewer_token
from conftest import timeout
from gateway_helpers import Api, host_token
from inventory.keys import drop_keys
from proc_helpers import ActBurst, ServerProc, free_port
from server.config import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400, method="thread")]

COUPONS, VIEWERS, PROCS = 100, 5000, 8


async def test_5000_viewers_claim_100_coupons(settings: Settings, redis_url: str, database_url: str,
                                              tmp_path: Path, uid: str) -> None:
    port = free_port()
    (tmp_path / "d").mkdir()
    env = {"LIVESALE_PORT": str(port), "LIVESALE_DATA_DIR": str(tmp_path / "d"), "LIVESALE_SECRET": settings.secret,
           "REDIS_URL": redis_url, "DATABASE_URL": database_url, "LIVESALE_WORKERS": "2"}
    server = await ServerProc.start(env)
    burst = None
    try:
        await server.wait_lines("livesale listening on", 2)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            api = Api(session, base)
            host, room, drop_id = host_token(settings.secret), f"r{uid}", f"d{uid}"
            await api.ok("POST", "/api/rooms", host, {"room_id": room, "title": "Coupon night"}, 201)
            await api.ok("POST", f"/api/rooms/{room}/actions/go_live", host, {}, 200)
            drop = (await api.ok("POST", f"/api/rooms/{room}/actions/drop_coupons", host,
                                 {"drop_id": drop_id, "count": COUPONS, "kind": "amount", "value": 500,
                                  "claim_s": int(timeout(600))}, 200))["drop"]
            assert drop["left"] == COUPONS
            tokens = [mint_viewer_token(settings.secret, f"v{i}", user=f"{uid}-v{i}")[0] for i in range(VIEWERS)]
            claim = {"type": "claim_coupon", "drop": drop_id}
            # every 50th viewer taps twice: the second tap must not give a second coupon
            viewers = [(t, str(i), [claim, claim] if i % 50 == 0 else [claim]) for i, t in enumerate(tokens)]
            burst = await ActBurst.start(base, room, viewers, PROCS, ready_s=240)
            results = await burst.go(wait_s=240)
            assert len(results) == VIEWERS
            # every tap answered (not NO_ANSWER / CLOSED_SOCKET / an error), about this drop
            odd = [a for _, ans in results for a in ans if a["type"] != "claim_result" or a["drop"] != drop_id]
            assert not odd, (len(odd), odd[:5])
            first = Counter(answers[0]["code"] for _, answers in results)
            assert first == {"CLAIMED": COUPONS, "ALL_CLAIMED": VIEWERS - COUPONS}, first
            winners = {int(kind) for kind, answers in results if answers[0]["code"] == "CLAIMED"}
            assert len(winners) == COUPONS  # distinct viewers
            for kind, answers in results:
                if len(answers) == 2:  # the second tap: ALREADY_CLAIMED for a winner, ALL_CLAIMED for a loser
                    want = "ALREADY_CLAIMED" if int(kind) in winners else "ALL_CLAIMED"
                    assert answers[1]["code"] == want, answers
            got = await api.ok("GET", f"/api/drops/{drop_id}")
            assert (got["claimed"], got["left"], got["state"]) == (COUPONS, 0, "claimed_out"), got
            redis = redis_for(redis_url)
            try:
                claimed_by = set(await redis.hkeys(drop_keys(drop_id).claims))
            finally:
                await redis.aclose()
            assert claimed_by == {f"{uid}-v{i}" for i in winners}
            some = sorted(winners)[:5]
            for i in some:
                wallet = await api.ok("GET", "/api/me/coupons", tokens[i])
                assert [c["drop_id"] for c in wallet["coupons"]] == [drop_id]
            # the room's state says the drop is claimed out (coupon_drop_ended was published): a late joiner sees it
            ws = await session.ws_connect(base + "/ws", protocols=("livesale.v1.json",))
            await ws.send_json({"type": "join", "room": room})
            while (snap := await ws.receive_json(timeout=timeout(10)))["type"] != "snapshot":
                pass
            await ws.close()
            shown = {d["drop_id"]: d for d in snap["drops"]}
            assert shown[drop_id]["state"] == "claimed_out" and shown[drop_id]["claimed"] == COUPONS, shown
    finally:
        if burst is not None:
            await burst.aclose()
        assert await server.stop() == 0
