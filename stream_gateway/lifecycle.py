"""The one lifecycle of the gateway's long-lived parts: ``start()`` runs, ``aclose()`` ends (idempotent).

A part that owns a background loop subclasses ``LoopPart`` and writes ``_run``; its loop and any
task it spawns live in its own ``OwnedTasks``, so closing the part ends all of them (bounded: a
cancel swallowed inside a library never hangs shutdown).
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Self

from commerce.tasks import OwnedTasks

__all__ = ["Lifecycle", "LoopPart", "STOP_TIMEOUT_S"]

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0


class Lifecycle:
    """``start()`` / ``aclose()``, and ``async with`` for both."""

    async def start(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


class LoopPart(Lifecycle):
    """A long-lived part with one background loop (``_run``)."""

    name = "loop"

    def __init__(self) -> None:
        self._tasks = OwnedTasks(logging.getLogger(type(self).__module__), f"{self.name} task")
        self._closing = False

    async def start(self) -> None:
        self._tasks.spawn(self._run())

    async def _run(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """End the loop and every task this part spawned; a second call does nothing more."""
        self._closing = True
        stuck = await self._tasks.cancel(STOP_TIMEOUT_S)
        if stuck:
            log.warning("%s stop: %d task(s) did not finish", self.name, stuck)
