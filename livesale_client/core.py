"""The session's pure core, shared by the asyncio and the synchronous client: request ids, which
requests may be sent again, the retry decision, reconnect backoff, the join message and the room's
sequence (epoch / seq) bookkeeping. No I/O, no clocks read here except through arguments.
"""

from __future__ import annotations

import itertools
import os
import random
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .errors import RETRYABLE

__all__ = [
    "IDEMPOTENT", "REPLY_OF", "new_rid", "backoff_delay", "Step", "decide", "Sequencer", "Verdict",
    "join_message", "RetryPolicy",
]

# Requests the server deduplicates by rid: after a lost connection or a retryable error they are sent
# again with the same rid (docs/PROTOCOL.md Codes: the first answer comes back, nothing is doubled).
IDEMPOTENT = frozenset({"buy", "pay", "release", "checkout", "vote", "claim_coupon", "enter_draw", "join_team"})
# the reply type of each request (host actions answer `ok`)
REPLY_OF = {"buy": "buy_result", "pay": "pay_result", "release": "release_result", "checkout": "payment_started",
            "join_team": "team_joined", "vote": "vote_result", "claim_coupon": "claim_result",
            "enter_draw": "entry_result"}
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0)

_counter = itertools.count(1)
_process = os.urandom(4).hex()


def new_rid(prefix: str = "r") -> str:
    """A fresh request id (``[A-Za-z0-9_.:@-]``, at most 128 characters): unique per process and run."""
    safe = "".join(ch for ch in prefix[:16] if ch.isalnum() or ch in "_.:@-") or "r"
    return f"{safe}-{_process}{random.getrandbits(32):08x}.{next(_counter)}"


def backoff_delay(attempt: int, steps: tuple[float, ...] = BACKOFF_S, rng: random.Random | None = None) -> float:
    """Seconds to wait before attempt ``attempt`` (1-based) with "equal jitter": the step d (1, 2, 4, 8, 16
    s cap) drawn from [d/2, d], as the JavaScript client does."""
    d = steps[min(max(attempt, 1), len(steps)) - 1]
    return d / 2 + (rng or random).random() * d / 2


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded attempts of one request (all with the same rid) and the pauses between them."""

    max_attempts: int = 4
    steps: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 4.0)  # after a retryable error (seconds, equal jitter)

    def delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.steps)


class Step(Enum):
    RETURN = "return"  # the reply is the answer
    RAISE = "raise"    # the reply (an error) or the loss is final
    RETRY = "retry"    # send again, same rid, after a pause (error) or the next join (lost connection)


def decide(request_type: str, reply: dict[str, Any] | None, attempt: int, policy: RetryPolicy) -> Step:
    """What to do after attempt ``attempt`` of a request got ``reply`` (None: the connection was lost)."""
    retryable = request_type in IDEMPOTENT and attempt < policy.max_attempts
    if reply is None:
        return Step.RETRY if retryable else Step.RAISE
    code = reply.get("code")
    if code in RETRYABLE and retryable:
        return Step.RETRY
    return Step.RAISE if reply.get("type") == "error" else Step.RETURN


def join_message(room: str, token: str | None, resume: tuple[str, int] | None,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "join", "room": room, **(extra or {})}
    if token:
        msg["token"] = token
    if resume is not None:
        msg["resume"] = {"epoch": resume[0], "seq": resume[1]}
    return msg


class Verdict(Enum):
    APPLY = "apply"          # deliver it
    DUPLICATE = "duplicate"  # seen already (a replay): drop
    RESYNC = "resync"        # a gap or a new epoch: drop the socket, join again without resume


class Sequencer:
    """The last sequenced room event applied (``epoch``, ``seq``): what ``join`` resumes from, and the
    check that events are applied in order, each once (docs/PROTOCOL.md Resume)."""

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.seq: int | None = None

    def resume_point(self) -> tuple[str, int] | None:
        return (self.epoch, self.seq) if self.epoch is not None and self.seq is not None else None

    def forget(self) -> None:
        self.epoch = None
        self.seq = None

    def on_snapshot(self, epoch: Any, seq: Any) -> None:
        self.epoch = None if epoch is None else str(epoch)
        self.seq = seq if isinstance(seq, int) else None

    def on_resumed(self, epoch: Any, from_seq: int) -> None:
        self.epoch = str(epoch)
        self.seq = from_seq

    def on_event(self, epoch: Any, seq: int) -> Verdict:
        if self.epoch is not None and epoch is not None and str(epoch) != self.epoch:
            return Verdict.RESYNC
        if self.seq is not None:
            if seq <= self.seq:
                return Verdict.DUPLICATE
            if seq > self.seq + 1:
                return Verdict.RESYNC
        self.seq = seq
        if epoch is not None:
            self.epoch = str(epoch)
        return Verdict.APPLY
