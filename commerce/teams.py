"""Fan teams (docs/PROTOCOL.md Interaction, Fan teams): the host defines a room's teams, viewers join
one (``team_join.lua`` decides joins and switches atomically), and the live leaderboard (members,
members present, likes, orders, GMV per team) goes out on the ambient lane through ``LiveCounts``.

The definitions live in the room's state hash (field ``teams``, published with ``teams_set``), the
members and counters in the room's hash slot (``inventory.keys.team_keys``)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from inventory.keys import team_keys
from inventory.scripts import Inventory
from inventory.store import Store

from . import events as ev
from .errors import Conflict, ErrorCode, NotFound, Refused
from .due import DueTimers
from .identity import Identity
from .interaction_part import InteractionPart
from .signals import SignalKind
from .interaction_requests import SetTeams
from .live_counts import LiveCounts
from .lua_scripts import script
from .room_bus import RoomBus

__all__ = ["Teams", "leaderboard_rows"]

PRESENT_FRESH_MS = 10_000  # a gateway's present counts older than this are left out (it stopped)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def leaderboard_rows(teams: list[dict[str, Any]], stats: dict[str, int],
                     present: dict[str, int]) -> list[dict[str, Any]]:
    """The leaderboard from the stats hash ("<team>:members|likes|orders|gmv:<cur>") and the present
    counts: one row per defined team, by GMV of the first currency seen, then likes. Pure."""
    rows = []
    currencies: list[str] = []
    for team in teams:
        tid = team["team_id"]
        gmv = {}
        for key, value in stats.items():
            if key.startswith(f"{tid}:gmv:"):
                cur = key.rsplit(":", 1)[1]
                gmv[cur] = value
                if cur not in currencies:
                    currencies.append(cur)
        rows.append({"team_id": tid, "members": max(0, stats.get(f"{tid}:members", 0)),
                     "present": present.get(tid, 0), "likes": stats.get(f"{tid}:likes", 0),
                     "orders": stats.get(f"{tid}:orders", 0), "gmv": gmv})
    first = currencies[0] if currencies else ""
    rows.sort(key=lambda r: (-r["gmv"].get(first, 0), -r["likes"], r["team_id"]))
    return rows


class Teams(InteractionPart):
    def __init__(self, store: Store, bus: RoomBus, inventory: Inventory, live: LiveCounts, due: DueTimers) -> None:
        super().__init__(store, bus, inventory, live, due)
        self._likes: dict[str, dict[str, int]] = {}  # room -> team -> likes not written yet (``on_like``)
        self._join = script(self.redis, "team_join")
        live.register("teams", self._live_rows)

    # -- host --------------------------------------------------------------------------------------

    async def definition(self, room_id: str) -> dict[str, Any] | None:
        """``{teams, allow_switch, switch_cooldown_s}`` of the room, or None when it has no teams."""
        out: dict[str, Any] | None = await self.bus.state_field(room_id, "teams")
        return out

    async def define(self, room_id: str, req: SetTeams) -> dict[str, Any]:
        teams = [{"team_id": t.team_id, "name": t.name, "colour": t.colour, "badge": t.badge} for t in req.teams]
        old = await self.definition(room_id)
        if old is not None:
            removed = {t["team_id"] for t in old["teams"]} - {t["team_id"] for t in teams}
            if removed:
                stats = await self._stats(room_id)
                busy = sorted(t for t in removed if stats.get(f"{t}:members", 0) > 0)
                if busy:
                    raise Conflict(f"team {busy[0]} has members: it cannot be removed")
        event = ev.teams_set(teams, req.allow_switch, req.switch_cooldown_s)
        definition = {"teams": teams, "allow_switch": req.allow_switch, "switch_cooldown_s": req.switch_cooldown_s}
        await self.bus.publish(room_id, event, {"teams": definition})
        self.live.mark(room_id, "teams")
        return definition

    # -- viewers -----------------------------------------------------------------------------------

    async def join(self, viewer: Identity, room_id: str, team_id: str) -> dict[str, Any]:
        """The ``team_joined`` fields; NOT_FOUND, TEAM_LOCKED or TEAM_COOLDOWN refused."""
        definition = await self.definition(room_id)
        if definition is None:
            raise NotFound(f"room {room_id} has no teams")
        if team_id not in {t["team_id"] for t in definition["teams"]}:
            raise NotFound(f"no team {team_id} in room {room_id}")
        k = team_keys(room_id)
        code, team, joined_at, switch_at, prev = await self._join(
            keys=[k.members, k.stats],
            args=[viewer.user, team_id, "1" if definition["allow_switch"] else "0",
                  int(definition["switch_cooldown_s"]) * 1000, self.bus.retain_room_ms])
        code = _text(code)
        if code == "TEAM_LOCKED":
            raise Refused(ErrorCode.TEAM_LOCKED,
                          f"you are in team {_text(team)} and this room does not allow switching")
        if code == "TEAM_COOLDOWN":
            raise Refused(ErrorCode.TEAM_COOLDOWN, f"you joined team {_text(team)} recently: switch from "
                                                   f"{int(switch_at)} (server time, ms)")
        if _text(prev) != team_id:
            self.live.mark(room_id, "teams")
            if self.signals is not None:
                self.signals.record(SignalKind.TEAM, viewer.user, room_id, ref=team_id)
        return {"team": team_id, "joined_at": int(joined_at),
                "switch_at": None if int(switch_at) < 0 else int(switch_at)}

    async def team_of(self, room_id: str, user: str) -> str | None:
        if not user:
            return None
        raw = await self.redis.hget(team_keys(room_id).members, user)
        return _text(raw).split("|", 1)[0] if raw else None

    # -- what the members do ---------------------------------------------------------------------------

    def on_like(self, room_id: str, team: str, n: int) -> None:
        """A member's likes: added up in this process and written with the next leaderboard read (every
        ``LiveCounts`` round, at most every 0.3 s), not one Redis write per tap."""
        per_room = self._likes.setdefault(room_id, {})
        per_room[team] = per_room.get(team, 0) + n
        self.live.mark(room_id, "teams")

    async def _flush_likes(self, room_id: str) -> None:
        pending = self._likes.pop(room_id, None)
        if pending:
            try:
                await self._bump(room_id, {f"{team}:likes": n for team, n in pending.items()}, mark=False)
            except Exception:  # Redis briefly unreachable: kept for the next round
                for team, n in pending.items():
                    self._likes.setdefault(room_id, {})[team] = self._likes.get(room_id, {}).get(team, 0) + n
                raise

    async def aclose(self) -> None:
        for room_id in list(self._likes):
            await self._flush_likes(room_id)

    async def on_paid(self, room_id: str, user: str, total: int, currency: str) -> None:
        """A purchase paid in the room (after discounts): counts for the buyer's team, if any."""
        team = await self.team_of(room_id, user)
        if team is not None:
            await self._bump(room_id, {f"{team}:orders": 1, f"{team}:gmv:{currency}": total})

    async def _bump(self, room_id: str, incs: dict[str, int], mark: bool = True) -> None:
        k = team_keys(room_id)
        async with self.redis.pipeline(transaction=False) as p:
            for field, n in incs.items():
                p.hincrby(k.stats, field, n)
            p.pexpire(k.stats, self.bus.retain_room_ms)
            await p.execute()
        if mark:
            self.live.mark(room_id, "teams")

    async def report_present(self, room_id: str, gateway_id: str, counts: dict[str, int], now_ms: int) -> None:
        """This gateway's connected members per team (every second, from the ticker)."""
        k = team_keys(room_id)
        async with self.redis.pipeline(transaction=False) as p:
            p.hget(k.present, gateway_id)
            p.hset(k.present, gateway_id, orjson.dumps({"c": counts, "t": now_ms}))
            p.pexpire(k.present, self.bus.retain_room_ms)
            before = (await p.execute())[0]
        if before is None or orjson.loads(before).get("c") != counts:
            self.live.mark(room_id, "teams")

    # -- reading -------------------------------------------------------------------------------------

    async def _stats(self, room_id: str) -> dict[str, int]:
        raw = await self.redis.hgetall(team_keys(room_id).stats)
        return {_text(a): int(b) for a, b in raw.items()}

    async def _present(self, room_id: str) -> dict[str, int]:
        now = int(time.time() * 1000)
        out: dict[str, int] = {}
        for raw in (await self.redis.hgetall(team_keys(room_id).present)).values():
            rec = orjson.loads(raw)
            if now - int(rec["t"]) <= PRESENT_FRESH_MS:
                for team, n in rec["c"].items():
                    out[team] = out.get(team, 0) + int(n)
        return out

    async def leaderboard(self, room_id: str) -> list[dict[str, Any]]:
        definition = await self.definition(room_id)
        if definition is None:
            return []
        return leaderboard_rows(definition["teams"], await self._stats(room_id), await self._present(room_id))

    async def _live_rows(self, room_id: str, _ids: set[str]) -> object:
        await self._flush_likes(room_id)
        return await self.leaderboard(room_id)

    async def view(self, room_id: str) -> dict[str, Any]:
        definition = await self.definition(room_id)
        if definition is None:
            raise NotFound(f"room {room_id} has no teams")
        return {**definition, "leaderboard": await self.leaderboard(room_id)}
