"""Background tasks owned by one component: started with ``spawn``, failures logged, ended together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["OwnedTasks"]


class OwnedTasks:
    """A set of fire-and-forget tasks that still have an owner: each failure is logged under
    ``what``, and ``drain`` / ``cancel`` end them at shutdown (bounded, so a cancel swallowed inside a
    library never hangs it)."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.warning("%s failed: %s", self._what, task.exception(), exc_info=task.exception())

    async def drain(self, timeout: float) -> None:
        """Let the running tasks finish (at most ``timeout`` seconds)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def cancel(self, timeout: float) -> int:
        """Cancel every task and wait for them (at most ``timeout`` s); returns how many did not end."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        return len(pending)
