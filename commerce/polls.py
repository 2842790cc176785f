"""Polls (docs/PROTOCOL.md Interaction, Polls): the host opens a poll of 2-6 options for a while, viewers
vote once each, the live counts go out on the ambient lane, and the final result is an event
(``poll_closed``) and a row in SQL (``inventory/polls.py``). Every decision is one Lua script on the
poll's keys (one hash slot, ``inventory.keys.poll_keys``) with Redis TIME as the clock:
``poll_open.lua`` takes the id once, ``poll_vote.lua`` counts a vote once per viewer and refuses it from
``ends_at`` on (the votes arriving together in one call), ``poll_close.lua`` turns the poll from open to
closed once (the host's ``close_poll``, or its deadline in ``DueTimers`` in any process). Finishing a
close (the SQL row, then ``poll_closed``) is idempotent: the row is insert-or-ignore and the event is
published under a once-name, so the deadline, which stays due until a close was finished, also finishes
one that a stopped process left half done, and publishes nothing twice."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from inventory.keys import poll_keys
from inventory.polls import PollRecord, PollStore
from inventory.scripts import Inventory
from inventory.store import Store

from . import events as ev
from .batcher import Batcher
from .due import DueTimers
from .errors import Conflict, NotFound
from .identity import Identity
from .interaction_part import InteractionPart
from .signals import SignalKind
from .interaction_requests import OpenPoll
from .live_counts import LiveCounts
from .lua_scripts import script
from .room_bus import RoomBus

__all__ = ["Polls", "winners", "poll_wire"]

DUE_KIND = "poll"


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def winners(counts: Sequence[int]) -> list[int]:
    """The indices of the most-voted options (every one of a tie); none when nobody voted. Pure."""
    top = max(counts, default=0)
    return [i for i, n in enumerate(counts) if n == top] if top > 0 else []


def poll_wire(poll_id: str, room_id: str, question: str, options: list[str], opened_at: int, ends_at: int,
              state: str, closed_at: int, counts: list[int]) -> dict[str, Any]:
    """The Poll object of the protocol (``winners`` and ``closed_at`` once closed). Pure."""
    poll: dict[str, Any] = {"poll_id": poll_id, "room_id": room_id, "question": question, "options": options,
                            "opened_at": opened_at, "ends_at": ends_at, "state": state, "counts": counts,
                            "total": sum(counts)}
    if state == "closed":
        poll["closed_at"] = closed_at
        poll["winners"] = winners(counts)
    return poll


def _from_script(poll_id: str, raw: Sequence[Any]) -> tuple[str, int, dict[str, Any]]:
    """(code, now, Poll) of an open or close script's answer."""
    code, now, room, question, options, opened_at, ends_at, state, closed_at = raw[:9]
    counts = [int(c) for c in raw[9:]]
    return _text(code), int(now), poll_wire(poll_id, _text(room), _text(question), orjson.loads(options),
                                            int(opened_at), int(ends_at), _text(state), int(closed_at), counts)


def _from_record(rec: PollRecord) -> dict[str, Any]:
    return poll_wire(rec.poll_id, rec.room_id, rec.question, orjson.loads(rec.options), rec.opened_at_ms,
                     rec.ends_at_ms, "closed", rec.closed_at_ms, orjson.loads(rec.counts))


class Polls(InteractionPart):
    def __init__(self, store: Store, bus: RoomBus, inventory: Inventory, live: LiveCounts, due: DueTimers) -> None:
        super().__init__(store, bus, inventory, live, due)
        self.sql = PollStore(store)
        self._open = script(self.redis, "poll_open")
        self._vote = script(self.redis, "poll_vote")
        # the votes of one poll (and one room) arriving together: one script call
        self.votes: Batcher[tuple[str, int], dict[str, Any]] = Batcher(self._vote_many, "vote batch")
        self._close = script(self.redis, "poll_close")
        live.register("polls", self._live_counts)
        due.register(DUE_KIND, self._due)

    # -- host --------------------------------------------------------------------------------------

    async def open(self, room_id: str, req: OpenPoll) -> dict[str, Any]:
        """The Poll, open now. The same id again in this room with the same question and options: that
        poll (idempotent; closed by now, its final result); otherwise, or in another room, CONFLICT."""
        poll_id = req.poll_id or "p-" + secrets.token_hex(4)
        options = list(req.options)
        done = await self.sql.get(poll_id)  # closed and perhaps forgotten by Redis: the id stays taken
        if done is not None:
            poll = _from_record(done)
            self._same(room_id, req.question, options, poll)
            return poll
        k = poll_keys(poll_id)
        raw = await self._open(keys=[k.meta, k.votes, k.counts],
                               args=[room_id, req.question, orjson.dumps(options), len(options),
                                     req.duration_s * 1000, self.bus.retain_room_ms])
        code, now, poll = _from_script(poll_id, raw)
        if code == "EXISTS":
            self._same(room_id, req.question, options, poll)
            if poll["state"] == "closed" or now >= poll["ends_at"]:
                return await self.close(room_id, poll_id)
        await self.due.schedule(DUE_KIND, poll_id, poll["ends_at"])
        # once per poll: a retry of an open whose event went out publishes nothing again
        await self.bus.publish(room_id, ev.poll_opened(poll), {f"poll:{poll_id}": poll}, once=f"poll_opened:{poll_id}")
        return poll

    @staticmethod
    def _same(room_id: str, question: str, options: list[str], poll: dict[str, Any]) -> None:
        if poll["room_id"] != room_id:
            raise Conflict(f"poll id {poll['poll_id']} is taken by another room")
        if poll["question"] != question or poll["options"] != options:
            raise Conflict(f"poll {poll['poll_id']} was opened with another question or options")

    async def close(self, room_id: str, poll_id: str) -> dict[str, Any]:
        """The final Poll: closed now, or the result of its earlier close. NOT_FOUND: not this room's."""
        code, poll = await self._decide_close(poll_id, room_id, "now")
        if poll is not None:
            return poll
        done = await self.sql.get(poll_id)  # Redis forgot it: the result in SQL
        if done is None or done.room_id != room_id:
            raise NotFound(f"no poll {poll_id} in room {room_id}")
        return _from_record(done)

    async def _due(self, poll_id: str) -> int | None:
        """The poll's deadline (any process, maybe several at once): closes it at ``ends_at``."""
        code, poll = await self._decide_close(poll_id, "", "due")
        if code == "NOT_DUE" and poll is not None:
            return int(poll["ends_at"])
        return None

    async def _decide_close(self, poll_id: str, room_id: str, mode: str) -> tuple[str, dict[str, Any] | None]:
        """Run ``poll_close.lua``; when the poll is closed (now or before), finish its close: the SQL row
        and the ``poll_closed`` event, both at most once whoever calls. (code, Poll or None: NOT_FOUND)."""
        k = poll_keys(poll_id)
        raw = await self._close(keys=[k.meta, k.counts], args=[room_id, mode])
        if _text(raw[0]) == "NOT_FOUND":
            return "NOT_FOUND", None
        code, _now, poll = _from_script(poll_id, raw)
        if code in ("CLOSED", "ALREADY"):
            await self._finish(poll)
        return code, poll

    async def _finish(self, poll: dict[str, Any]) -> None:
        pid = poll["poll_id"]
        await self.sql.record(PollRecord(
            poll_id=pid, room_id=poll["room_id"], question=poll["question"],
            options=orjson.dumps(poll["options"]).decode(), counts=orjson.dumps(poll["counts"]).decode(),
            total=poll["total"], opened_at_ms=poll["opened_at"], ends_at_ms=poll["ends_at"],
            closed_at_ms=poll["closed_at"]))
        await self.bus.publish(poll["room_id"], ev.poll_closed(poll), {f"poll:{pid}": poll}, once=f"poll_closed:{pid}")

    # -- viewers -----------------------------------------------------------------------------------

    async def vote(self, viewer: Identity, room_id: str | None, poll_id: str, option: int) -> dict[str, Any]:
        """``{code, poll, option?, counts?, total?}``: VOTED | ALREADY_VOTED (``option``: the vote that
        counted) | CLOSED | INVALID | NOT_FOUND (no such poll; over the WebSocket: not in ``room_id``)."""
        return await self.votes.call(f"{poll_id}|{room_id or ''}", (viewer.user, option))

    def submit_vote(self, viewer: Identity, room_id: str | None, poll_id: str, option: int,
                    done: Callable[[dict[str, Any] | BaseException], None]) -> None:
        """``vote`` for the burst: the votes of one poll arriving together are decided by one script call
        (``Batcher``, like the buys of a sale) and answered from its result loop."""
        self.votes.submit(f"{poll_id}|{room_id or ''}", (viewer.user, option), done)

    async def _vote_many(self, key: str, votes: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
        poll_id, _, room_id = key.partition("|")
        k = poll_keys(poll_id)
        args: list[Any] = [room_id]
        for user, option in votes:
            args += (user, option)
        raw = await self._vote(keys=[k.meta, k.votes, k.counts], args=args)
        room, counts = _text(raw[0]), [int(c) for c in raw[1]]
        out: list[dict[str, Any]] = []
        for code_raw, option in raw[2:]:
            code = _text(code_raw)
            one: dict[str, Any] = {"code": code, "poll": poll_id}
            if code != "NOT_FOUND":
                if code in ("VOTED", "ALREADY_VOTED"):
                    one["option"] = int(option)
                one["counts"] = counts
                one["total"] = sum(counts)
            out.append(one)
        if any(o["code"] == "VOTED" for o in out):
            self.live.mark(room, "polls", poll_id)
            if self.signals is not None:
                for (user, option), o in zip(votes, out, strict=True):
                    if o["code"] == "VOTED":
                        self.signals.record(SignalKind.VOTED, user, room, ref=poll_id, detail=str(option))
        return out

    async def aclose(self) -> None:
        await self.votes.aclose()

    # -- reading -----------------------------------------------------------------------------------

    async def _now_ms(self) -> int:
        sec, usec = await self.redis.time()
        return int(sec) * 1000 + int(usec) // 1000

    async def get(self, poll_id: str, viewer: Identity) -> dict[str, Any]:
        """The Poll (from Redis while it knows it, else the final result in SQL), plus ``you`` for a
        viewer: the option the viewer voted, or None. A poll past ``ends_at`` is closed first."""
        k = poll_keys(poll_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.hget(k.meta, "state")
            p.hget(k.meta, "ends_at")
            p.hget(k.votes, viewer.user or "-")
            state, ends_at, you = await p.execute()
        poll: dict[str, Any] | None = None
        # the clock apart from the poll's keys: TIME has no key, so a cluster cannot put it in their transaction
        if state is not None and _text(state) == "open" and await self._now_ms() >= int(ends_at):
            _code, poll = await self._decide_close(poll_id, "", "due")  # its deadline has not run yet
        elif state is not None:
            poll = await self._read(poll_id)
        if poll is None:
            done = await self.sql.get(poll_id)
            if done is None:
                raise NotFound(f"no poll {poll_id}")
            poll = _from_record(done)
        if viewer.is_viewer:
            poll["you"] = None if you is None else int(you)
        return poll

    async def _read(self, poll_id: str) -> dict[str, Any] | None:
        k = poll_keys(poll_id)
        async with self.redis.pipeline(transaction=True) as p:
            p.hgetall(k.meta)
            p.hgetall(k.counts)
            meta, counts = await p.execute()
        if not meta:
            return None
        m = {_text(a): _text(b) for a, b in meta.items()}
        c = {_text(a): int(b) for a, b in counts.items()}
        return poll_wire(poll_id, m["room"], m["question"], orjson.loads(m["options"]), int(m["opened_at"]),
                         int(m["ends_at"]), m["state"], int(m.get("closed_at") or 0),
                         [c.get(str(i), 0) for i in range(int(m["n"]))])

    async def _live_counts(self, room_id: str, ids: set[str]) -> object:
        """The ambient ``polls`` value: ``{poll_id: {counts, total}}`` of the polls given."""
        order = sorted(ids)
        async with self.redis.pipeline(transaction=False) as p:
            for pid in order:
                k = poll_keys(pid)
                p.hget(k.meta, "n")
                p.hgetall(k.counts)
            replies = await p.execute()
        out: dict[str, dict[str, Any]] = {}
        for i, pid in enumerate(order):
            n, raw = replies[2 * i], replies[2 * i + 1]
            if n is None:
                continue
            c = {_text(a): int(b) for a, b in raw.items()}
            counts = [c.get(str(j), 0) for j in range(int(n))]
            out[pid] = {"counts": counts, "total": sum(counts)}
        return out
