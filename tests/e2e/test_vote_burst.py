"""A poll under a real multi-process burst (issue "#10 Interaction", done when: 5,000 viewers vote at once).

Two `livesale serve` processes (gateways) on one Redis/Valkey and one SQL database; 5,000 viewers of one
room, half on each gateway, held by several OS processes of tests/act_burst_proc.py (proc_helpers.ActBurst),
each from its own 127.0.0.x address, every socket joined first. At GO every viewer votes once; every
10th then votes again (another option) and must be told ALREADY_VOTED with the option that counted; 100
viewers also have a second socket on the other gateway that votes at the same moment, and exactly one of
their two sockets is counted. Then: every vote counted once (the counts add up to 5,000 and each option's count is
what the viewers sent), the Redis votes hash holds one entry per viewer, the live counts reached the
ticks of both gateways, and the host's close gives the final result 5,000 in `poll_closed`, in SQL and
in `GET /api/polls/{poll}`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from redis_helpers import redis_for

from commerce.identity import mint_viewer_token
from conftest import timeout
from gateway_helpers import JSON, Api, WsClient, host_token
from inventory.keys import poll_keys
from inventory.polls import PollStore
from inventory.store import Store
from proc_helpers import ActBurst, ActOn, ServerProc, free_port, stop_all
from server.config import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300, method="thread")]

VIEWERS = 5000     # distinct users, one vote each
OPTIONS = ["Red", "Blue", "Green", "Black"]
AGAIN_EVERY = 10   # every 10th viewer votes a second time (ALREADY_VOTED)
DOUBLES = 100      # viewers with a second socket on the other gateway, voting at the same moment
PROCS = 4


def server_env(settings: Settings, redis_url: str, database_url: str, data_dir: Path, port: int) -> dict[str, str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return {"LIVESALE_PORT": str(port), "LIVESALE_DATA_DIR": str(data_dir), "LIVESALE_SECRET": settings.secret,
            "REDIS_URL": redis_url, "DATABASE_URL": database_url,
            "LIVESALE_TICK_MS": "500"}  # fewer ambient frames to 2,500 sockets a gateway on a small machine


def outcome(answer: dict[str, Any]) -> tuple[str | None, int | None]:
    """(code, option counted) of a ``vote_result``; anything else (NO_ANSWER, CLOSED_SOCKET, an error) as
    ("type[:code]", None), so that the code assertions name it."""
    if answer["type"] == "vote_result":
        return answer.get("code"), answer.get("option")
    return ":".join(str(answer[k]) for k in ("type", "code") if k in answer), None


async def test_five_thousand_viewers_vote_once_each(settings: Settings, redis_url: str, database_url: str,
                                                    tmp_path: Path, uid: str) -> None:
    started = time.monotonic()
    pa, pb = free_port(), free_port()
    gw1 = await ServerProc.start(server_env(settings, redis_url, database_url, tmp_path / "g1", pa))
    gw2 = await ServerProc.start(server_env(settings, redis_url, database_url, tmp_path / "g2", pb))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                    timeout=aiohttp.ClientTimeout(total=timeout(60)))  # no call hangs the test
    redis = redis_for(redis_url)
    observers: list[WsClient] = []
    burst: ActBurst | None = None
    timings: dict[str, float] = {}
    try:
        (l1,), (l2,) = await asyncio.gather(gw1.wait_lines("livesale listening on"),
                                            gw2.wait_lines("livesale listening on"))
        bases = [l1.split()[-1], l2.split()[-1]]
        api1, api2 = Api(session, bases[0]), Api(session, bases[1])
        host = host_token(settings.secret)
        room, pid = f"r{uid}", f"poll-{uid}"
        await api1.ok("POST", "/api/rooms", host, {"room_id": room, "title": "Vote burst"}, 201)
        await api1.ok("POST", f"/api/rooms/{room}/actions/go_live", host, {}, 200)
        for base in bases:  # one observer per gateway: events and ticks
            ws = await WsClient.connect(session, base + "/ws", JSON)
            assert (await ws.join(room, mint_viewer_token(settings.secret, "watch")[0], timeout=timeout(10)))["type"] \
                == "snapshot"
            observers.append(ws)
        poll = (await api1.ok("POST", f"/api/rooms/{room}/actions/open_poll", host,
                              {"poll_id": pid, "question": "Which colour next?", "options": OPTIONS,
                               "duration_s": 600}, 200))["poll"]
        for ws in observers:
            await ws.wait(lambda m: m.get("type") == "poll_opened", timeout(10))

        # -- the voters: user i on gateway i % 2, option by a seeded draw; doubles on the other gateway too
        rnd = random.Random(uid)
        users = [f"{uid}-u{i}" for i in range(VIEWERS)]
        tokens = {u: mint_viewer_token(settings.secret, u, user=u)[0] for u in users}
        sent = {u: rnd.randrange(len(OPTIONS)) for u in users}
        again = {u: (sent[u] + 1) % len(OPTIONS) for i, u in enumerate(users) if i % AGAIN_EVERY == 0}
        doubled = [u for i, u in enumerate(users) if i % AGAIN_EVERY == 5][:DOUBLES]
        second = {u: (sent[u] + 2) % len(OPTIONS) for u in doubled}
        sockets: list[tuple[str, int, int, int | None]] = []  # (user, gateway, option, again option)
        sockets += [(u, i % 2, sent[u], again.get(u)) for i, u in enumerate(users)]
        sockets += [(u, 1 - users.index(u) % 2, second[u], None) for u in doubled]
        rnd.shuffle(sockets)

        def votes_of(opt: int, again_opt: int | None) -> list[dict[str, Any]]:
            return [{"type": "vote", "poll": pid, "option": o} for o in (opt, again_opt) if o is not None]

        viewers: list[ActOn] = [(tokens[u], u, votes_of(opt, again_opt), bases[gw])
                                for u, gw, opt, again_opt in sockets]
        timings["setup"] = time.monotonic() - started
        t0 = time.monotonic()
        burst = await ActBurst.start(bases[0], room, viewers, PROCS, concurrency=100, answer_s=45, ready_s=120)
        timings["connect+join"] = time.monotonic() - t0
        t1 = time.monotonic()
        results = await burst.go(wait_s=90)
        timings["burst"] = time.monotonic() - t1
        await burst.aclose()  # the voters leave before the checks, as they would after voting
        burst = None

        # -- every answer
        answers: list[tuple[str, int, list[Any]]] = []  # (user, option sent, [code, option, code2, option2])
        assert len(results) == len(sockets)
        for (u, _gw, opt, again_opt), (kind, ans) in zip(sockets, results, strict=True):
            assert kind == u and len(ans) == (1 if again_opt is None else 2), (u, ans)
            answers.append((u, opt, [*outcome(ans[0]), *(outcome(ans[1]) if len(ans) > 1 else (None, None))]))
        codes = Counter(row[0] for _, _, row in answers)
        assert codes == {"VOTED": VIEWERS, "ALREADY_VOTED": DOUBLES}, codes
        counted: dict[str, int] = {}
        for u, opt, (code, option, _code2, _option2) in answers:
            if code == "VOTED":
                assert option == opt and u not in counted, (u, opt, option)
                counted[u] = opt
        assert set(counted) == set(users)
        for u in users:  # one of a double's two sockets counted, with the option that socket sent
            if u not in second:
                assert counted[u] == sent[u], u
            else:
                assert counted[u] in (sent[u], second[u]), u
        for u, _opt, (code, option, code2, option2) in answers:
            if code == "ALREADY_VOTED":
                assert u in second and option == counted[u], (u, option, counted[u])
            if u in again and code2 is not None:
                assert (code2, option2) == ("ALREADY_VOTED", counted[u]), (u, code2, option2)
        assert sum(1 for _, _, row in answers if row[2] is not None) == len(again)
        expected = [0] * len(OPTIONS)
        for opt in counted.values():
            expected[opt] += 1
        summary = {"counts": expected, "doubles_won_by_first_socket": sum(counted[u] == sent[u] for u in second)}

        # -- Redis agrees: one vote per viewer, the counts as sent
        votes = await redis.hgetall(poll_keys(pid).votes)
        assert len(votes) == VIEWERS and {u: int(o) for u, o in votes.items()} == counted
        live = await api2.ok("GET", f"/api/polls/{pid}", tokens[users[0]])
        assert (live["state"], live["counts"], live["total"], live["you"]) == ("open", expected, VIEWERS,
                                                                               counted[users[0]]), live

        # -- the live counts reached the ticks of both gateways
        for ws in observers:
            await ws.wait(lambda m: m.get("type") == "tick" and (m.get("polls") or {}).get(pid, {}).get("total")
                          == VIEWERS, timeout(15))

        # -- the host closes it: the final result, in the event, in SQL and over HTTP
        final = (await api2.ok("POST", f"/api/rooms/{room}/actions/close_poll", host, {"poll": pid}, 200))["poll"]
        assert (final["state"], final["counts"], final["total"]) == ("closed", expected, VIEWERS), final
        top = max(expected)
        assert final["winners"] == [i for i, n in enumerate(expected) if n == top]
        assert final["opened_at"] == poll["opened_at"] and final["closed_at"] <= final["ends_at"]
        for ws in observers:
            ev = await ws.wait(lambda m: m.get("type") == "poll_closed", timeout(10))
            assert ev["poll"] == final
        store = await asyncio.wait_for(Store.open(database_url), timeout(30))
        try:
            row = await PollStore(store).get(pid)
        finally:
            await store.close()
        assert row is not None and row.total == VIEWERS and json.loads(row.counts) == expected, row
        assert await api1.ok("GET", f"/api/polls/{pid}", host) == {**final, "you": None}
        timings["total"] = time.monotonic() - started
        print(f"\nvote burst: {summary}; " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    finally:
        if burst is not None:
            await burst.aclose()
        for ws in observers:
            await ws.close()
        await session.close()
        await redis.aclose()
        rcs = await stop_all(gw1, gw2)
    assert rcs == [0, 0], (rcs, [ln[:500] for ln in gw1.lines[-20:]], [ln[:500] for ln in gw2.lines[-20:]])
