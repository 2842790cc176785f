"""Background tasks owned by one component: started with ``spawn``, failures logged, ended together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

__all__ = ["OwnedTasks", "Every"]


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


class Every:
    """Run ``fn`` every ``interval_s`` seconds in an owned task until ``aclose`` (a failed round is
    logged under ``what`` and the next one tries again). ``interval_s`` <= 0: never started."""

    def __init__(self, interval_s: float, fn: Callable[[], Awaitable[Any]], logger: logging.Logger, what: str) -> None:
        self.interval_s = interval_s
        self.fn = fn
        self._log = logger
        self._what = what
        self._stop = asyncio.Event()
        self._tasks = OwnedTasks(logger, what)

    def start(self) -> None:
        if self.interval_s > 0:
            self._tasks.spawn(self._run())

    @property
    def stopping(self) -> bool:
        """``aclose`` was called: a long round may stop early."""
        return self._stop.is_set()

    async def aclose(self) -> None:
        self._stop.set()
        await self._tasks.drain(5.0)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(self.interval_s):
                    await self._stop.wait()
                return
            except TimeoutError:
                pass
            try:
                await self.fn()
            except Exception as exc:  # Redis or SQL briefly away: the next round tries again
                self._log.warning("%s: round failed: %s: %s", self._what, type(exc).__name__, exc)
