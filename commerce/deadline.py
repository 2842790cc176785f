"""The answer deadline of the money requests that are not batched (LIVESALE_ANSWER_DEADLINE_MS): ``pay``,
``checkout`` and ``release``, over WebSocket and HTTP alike.

``AnswerDeadline.within(pending)`` returns the request's outcome, or raises ``LateAnswer`` (an ``UNAVAILABLE``)
once the deadline passes: the request goes on in the background, owned here and cancelled at shutdown, and
its outcome is kept by the scripts and the payments under the hold / request id, so the client's retry gets it
(a late reply itself is never sent). The batched requests (buy, vote, claim) have their deadline in
``commerce/batcher.py``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from .errors import ErrorCode, Unavailable, as_error
from .meters import RareLog
from .tasks import OwnedTasks

__all__ = ["AnswerDeadline", "LateAnswer"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class LateAnswer(Unavailable):
    """The request was not finished within the answer deadline; it goes on, a retry gets its outcome."""


class AnswerDeadline:
    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s  # 0: no deadline
        self._late = OwnedTasks(log, "late answer")  # requests answered at the deadline, still running
        self._rare = RareLog(log)  # a failover's late failures: one line a second

    async def within(self, pending: Awaitable[T]) -> T:
        """``pending``'s outcome (its exception raised), or ``LateAnswer`` once the deadline has passed."""
        if not self.deadline_s:
            return await pending
        task = self._late.spawn(_settled(pending))
        done, _ = await asyncio.wait((task,), timeout=self.deadline_s)
        if not done:
            task.add_done_callback(self._log_late)
            raise LateAnswer(f"not finished within {self.deadline_s:g} s (the stock service is slow or failing "
                             "over); retry with the same request id")
        outcome = task.result()
        if isinstance(outcome, BaseException):
            raise outcome
        result: T = outcome
        return result

    def _log_late(self, task: asyncio.Task[Any]) -> None:
        """The outcome of a request answered at its deadline: a failure is only logged (the client was
        answered and retries with the same id); a failover's are counted on the rare UNAVAILABLE line."""
        if task.cancelled():
            return
        outcome = task.result()
        if not isinstance(outcome, BaseException):
            return
        err = as_error(outcome)
        if err is not None and err.code is ErrorCode.UNAVAILABLE:
            self._rare.note("late request", outcome)
        elif err is None:
            log.warning("a request answered at its deadline failed later: %r", outcome)

    async def aclose(self) -> None:
        """Stops the requests still running after their deadline answer (bounded)."""
        await self._late.cancel(5.0)


async def _settled(pending: Awaitable[Any]) -> Any:
    """A request's outcome or the exception it raised, returned (``within`` raises it when in time)."""
    try:
        return await pending
    except Exception as exc:
        return exc
