"""What one incoming message means for the session, decided without I/O (shared by ``aio`` and ``sync``).

``Session`` holds what outlives a connection (the room's epoch / seq, the clock, the last snapshot, the
server's hello) and turns each decoded message into an ``Outcome`` that the transport acts on: deliver
an event, settle a waiting request, count a clock sample, resync, or give up on a refused join.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .clock import ClockSync
from .core import Sequencer, Verdict, join_message
from .messages import Hello, Message, Snapshot, is_sequenced, parse

__all__ = ["Action", "Outcome", "Session", "JOIN_REFUSALS"]

# error codes (without rid, before the join succeeded) that refuse the join for good
JOIN_REFUSALS = frozenset({"NOT_FOUND", "UNAUTHORIZED", "FORBIDDEN", "INVALID", "BAD_MESSAGE"})


class Action(Enum):
    DELIVER = "deliver"      # an event for the application
    JOINED = "joined"        # the join succeeded (snapshot / resumed): deliver, then send what waited
    REPLY = "reply"          # carries a rid: settle the request waiting on it (and deliver)
    CLOCK = "clock"          # a clock sample: ``clock`` holds (t0, t1, t2, t3)
    IGNORE = "ignore"        # nothing to do (pong, a duplicate event)
    RESYNC = "resync"        # a gap or a new epoch: drop this socket, join again for a fresh snapshot
    REFUSED = "refused"      # the join was refused: final
    JOIN_LATER = "join_later"  # join rate-limited: send the join again in 1-2 s on the same socket


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    message: Message | None = None
    raw: dict[str, Any] | None = None
    clock: tuple[float, float, float, float] | None = None


class Session:
    """A client's state across its connections to one room."""

    def __init__(self, room: str, token: str | None = None,
                 join_fields: dict[str, Any] | Callable[[], dict[str, Any]] | None = None) -> None:
        self.room = room
        self.token = token
        self.join_fields = join_fields
        self.sequencer = Sequencer()
        self.clock = ClockSync()
        self.hello: Hello | None = None
        self.snapshot: Snapshot | None = None
        self.joined = False  # on the current connection

    # -- per connection ------------------------------------------------------------------------------
    def join(self) -> dict[str, Any]:
        """The ``join`` for a new connection: with ``resume`` once a sequenced position is known."""
        self.joined = False
        extra = self.join_fields() if callable(self.join_fields) else self.join_fields
        return join_message(self.room, self.token, self.sequencer.resume_point(), extra)

    def connection_lost(self) -> None:
        self.joined = False

    def resync(self) -> None:
        """Forget the position: the next join gets a fresh snapshot."""
        self.sequencer.forget()

    # -- incoming ------------------------------------------------------------------------------------
    def receive(self, raw: dict[str, Any], t3: float) -> Outcome:
        kind = raw.get("type")
        if kind == "clock":
            try:
                sample = (float(raw["t0"]), float(raw["t1"]), float(raw["t2"]), t3)
            except (KeyError, TypeError, ValueError):
                return Outcome(Action.IGNORE, raw=raw)
            return Outcome(Action.CLOCK, raw=raw, clock=sample)
        if kind == "pong":
            return Outcome(Action.IGNORE, raw=raw)
        if kind == "hello":
            hello = parse(raw)
            assert isinstance(hello, Hello)
            self.hello = hello
            if hello.server_time and not self.clock.synced:
                self.clock.hint(hello.server_time, t3)
            return Outcome(Action.IGNORE, hello, raw)
        if kind == "snapshot":
            snap = parse(raw)
            assert isinstance(snap, Snapshot)
            self.snapshot = snap
            self.sequencer.on_snapshot(raw.get("epoch"), raw.get("seq"))
            return self._joined(snap, raw)
        if kind == "resumed":
            self.sequencer.on_resumed(raw.get("epoch"), int(raw.get("from_seq") or 0))
            return self._joined(parse(raw), raw)
        if kind == "error" and not raw.get("rid") and not self.joined:
            code = raw.get("code")
            if code == "RATE_LIMITED":
                return Outcome(Action.JOIN_LATER, parse(raw), raw)
            if code in JOIN_REFUSALS:
                return Outcome(Action.REFUSED, parse(raw), raw)
        if is_sequenced(raw):
            verdict = self.sequencer.on_event(raw.get("epoch"), raw["seq"])
            if verdict is Verdict.DUPLICATE:
                return Outcome(Action.IGNORE, raw=raw)
            if verdict is Verdict.RESYNC:
                return Outcome(Action.RESYNC, raw=raw)
        msg = parse(raw)
        if isinstance(raw.get("rid"), str):
            return Outcome(Action.REPLY, msg, raw)
        return Outcome(Action.DELIVER, msg, raw)

    def _joined(self, msg: Message, raw: dict[str, Any]) -> Outcome:
        first = not self.joined
        self.joined = True
        return Outcome(Action.JOINED if first else Action.DELIVER, msg, raw)


class SessionFacts:
    """What both clients (``aio`` and ``sync``) tell about their session, read from ``self.session``."""

    session: Session

    @property
    def clock(self) -> ClockSync:
        return self.session.clock

    @property
    def offset_ms(self) -> float:
        return self.session.clock.offset

    def server_now(self) -> float:
        """The server's time in ms (local clock + the best clock sample's offset)."""
        return self.session.clock.server_now()

    @property
    def snapshot(self) -> Snapshot | None:
        return self.session.snapshot

    @property
    def you(self) -> dict[str, Any] | None:
        return self.session.snapshot.you if self.session.snapshot else None

    @property
    def limits(self) -> dict[str, Any]:
        return self.session.hello.limits if self.session.hello else {}

    @property
    def epoch(self) -> str | None:
        return self.session.sequencer.epoch

    @property
    def seq(self) -> int | None:
        return self.session.sequencer.seq
