"""One OS process of viewers in an interaction burst over the WebSocket (claim a coupon, vote, enter a
draw: run by tests/proc_helpers.py ``ActBurst``; not a test module).

A process holds WebSocket viewers of one room, on one or more gateways, all from its own source
address (127.0.0.x), connected and joined before the burst so only the messages race.

Protocol over stdin/stdout, one JSON line or word each way:
  parent -> child  config line: {"room", "src": "127.0.0.x" | null, "timeout": s, "concurrency": n, "hold": false,
                                 "collect": [type, ...], "viewers": [[base, token, kind, [msg, ...]], ...]}
                   (``src``: the source address of every socket, null: the system's choice; ``timeout``: the
                   wait for a join's snapshot and for each answer; ``concurrency``: joins under way at once)
  child  -> parent "READY"   (every socket connected and joined)
  parent -> child  "GO" or "GO {name: value, ...}"
                             (each socket sends its messages, one after another, each with a fresh rid,
                             waiting for the answer carrying that rid; ticks and events in between are skipped.
                             The object fills the messages' placeholders first: a field whose value is the
                             string "{name}", for a name the object has, gets that name's value; so GO with
                             {"draw": "d1"} sends {"type": "enter_draw", "draw": "{draw}"} as draw "d1": for
                             what is known only at GO, such as the id of a draw opened after READY)
  child  -> parent result line: {"results": [[kind, [answer, ...]], ...]}
                   (in config order, one answer per message; {"type": "NO_ANSWER"} when nothing came back
                   in time, {"type": "CLOSED_SOCKET"} when the socket closed first)
With "hold": true the sockets stay joined after answering (a draw's entrants must be present when it
draws); the result line comes first, then the parent ends the hold with one of:
  parent -> child  "CLOSE"   (close the sockets, nothing more on stdout)
  parent -> child  "RELEASE {"until": [[type, ...], ...] | null, "wait": s}"
                             (first wait, at most ``wait`` seconds, until viewer i has collected at least
                             one message of each type in until[i] (config order; null: no wait), then close)
  child  -> parent collected line: {"collected": [[message, ...], ...]}
                   (config order: every message each socket received after its join's snapshot whose
                   ``type`` is in the config's "collect", answers to its own rids aside, as they came;
                   {"type": "CLOSED_SOCKET"} last when the socket closed before the release)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

import aiohttp

PROTOCOL = "livesale.v1.json"
NO_ANSWER: dict[str, Any] = {"type": "NO_ANSWER"}
CLOSED_SOCKET: dict[str, Any] = {"type": "CLOSED_SOCKET"}


class Viewer:
    """One joined socket and the pushed messages it has collected (types in ``collect``)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, collect: frozenset[str], changed: asyncio.Event) -> None:
        self.ws = ws
        self.collect = collect
        self.changed = changed  # set on every collected message, for RELEASE's wait
        self.got: list[dict[str, Any]] = []

    def keep(self, m: dict[str, Any]) -> None:
        if m.get("type") in self.collect:
            self.got.append(m)
            self.changed.set()

    def has(self, types: list[str]) -> bool:
        return all(any(m.get("type") == t for m in self.got) for t in types)

    async def ask(self, msg: dict[str, Any], rid: str, wait: float) -> dict[str, Any]:
        """The message echoing ``rid``, else NO_ANSWER / CLOSED_SOCKET."""
        if self.ws.closed:
            return CLOSED_SOCKET
        try:
            await self.ws.send_json({**msg, "rid": rid})
        except (ConnectionError, RuntimeError):  # closed under us (aiohttp raises either, by version)
            return CLOSED_SOCKET
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return NO_ANSWER
            try:
                frame = await asyncio.wait_for(self.ws.receive(), left)
            except TimeoutError:
                return NO_ANSWER
            if frame.type != aiohttp.WSMsgType.TEXT:
                if frame.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                    continue
                return CLOSED_SOCKET
            m = json.loads(frame.data)
            if m.get("rid") == rid:
                return dict(m)
            self.keep(m)

    async def run(self, msgs: list[dict[str, Any]], tag: str, wait: float) -> list[dict[str, Any]]:
        return [await self.ask(m, f"{tag}-{n}", wait) for n, m in enumerate(msgs)]

    async def drain(self) -> None:
        """Read what the room sends while the socket is held (so its buffer never fills), collecting."""
        async for frame in self.ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                self.keep(json.loads(frame.data))
        self.got.append(CLOSED_SOCKET)
        self.changed.set()


async def join_room(session: aiohttp.ClientSession, sem: asyncio.Semaphore, base: str, room: str, token: str,
                    wait: float, extra: dict[str, Any] | None = None) -> aiohttp.ClientWebSocketResponse:
    """One viewer's socket, joined (its snapshot read); at most ``sem``'s count connect at once; ``extra``:
    more fields of the join (a share link's ``ref``). Also used by tests/pool_burst_proc.py and
    tests/commission_proc.py."""
    async with sem:
        ws = await session.ws_connect(base + "/ws", protocols=(PROTOCOL,), heartbeat=None)
        await ws.send_json({"type": "join", "room": room, "token": token, **(extra or {})})
        while True:
            m = await asyncio.wait_for(ws.receive_json(), wait)
            if m["type"] == "snapshot":
                return ws
            if m["type"] == "error":
                raise SystemExit(f"join refused: {m}")


def _fill(msg: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``msg`` with each field whose value is "{name}", for a name in ``values``, set to that value."""
    def value(v: Any) -> Any:
        return values.get(v[1:-1], v) if isinstance(v, str) and v.startswith("{") and v.endswith("}") else v
    return {k: value(v) for k, v in msg.items()}


async def _line() -> tuple[str, str]:
    """The next stdin line as (its first word, the rest); ("", "") when the parent closed stdin."""
    line = (await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)).strip()
    word, _, rest = line.partition(" ")
    return word, rest


async def _release(joined: list[Viewer], changed: asyncio.Event, until: list[list[str]] | None,
                   wait: float) -> None:
    """Wait (at most ``wait`` seconds) until joined[i] has a message of each type in until[i]."""
    if until is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while not all(j.has(types) for j, types in zip(joined, until, strict=True)):
        changed.clear()
        left = deadline - loop.time()
        if left <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), left)


async def _main() -> None:
    loop = asyncio.get_running_loop()
    cfg = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    wait = float(cfg["timeout"])
    viewers = cfg["viewers"]
    collect = frozenset(cfg.get("collect") or ())
    changed = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0, local_addr=(cfg["src"], 0) if cfg.get("src") else None)
    async with aiohttp.ClientSession(connector=connector) as session:
        sem = asyncio.Semaphore(int(cfg["concurrency"]))
        sockets = await asyncio.gather(*(join_room(session, sem, base, cfg["room"], token, wait)
                                         for base, token, _kind, _msgs in viewers))
        joined = [Viewer(ws, collect, changed) for ws in sockets]
        print("READY", flush=True)
        word, rest = await _line()
        if word != "GO":
            raise SystemExit(f"expected GO, got {word!r}")
        values = json.loads(rest or "{}")
        answers = await asyncio.gather(*(j.run([_fill(m, values) for m in v[3]], f"a{i}", wait)
                                         for i, (j, v) in enumerate(zip(joined, viewers, strict=True))))
        out = [[v[2], a] for v, a in zip(viewers, answers, strict=True)]
        print(json.dumps({"results": out}), flush=True)
        if cfg.get("hold"):
            drains = [asyncio.create_task(j.drain()) for j in joined]
            word, rest = await _line()
            if word == "RELEASE":
                ask = json.loads(rest)
                await _release(joined, changed, ask.get("until"), float(ask.get("wait", wait)))
            elif word not in ("CLOSE", ""):  # "": the parent closed stdin
                raise SystemExit(f"expected CLOSE or RELEASE, got {word!r}")
            for d in drains:
                d.cancel()
            await asyncio.gather(*drains, return_exceptions=True)
            if word == "RELEASE":
                print(json.dumps({"collected": [j.got for j in joined]}), flush=True)
        with contextlib.suppress(Exception):  # the answers are out: a slow close handshake changes nothing
            await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True), 10)


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a test dependency here, but not required
        asyncio.run(_main())
    else:
        uvloop.run(_main())
