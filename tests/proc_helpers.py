"""A `livesale serve` (or other `livesale` command) subprocess for the tests that start real server
processes (tests/e2e/test_multiprocess.py, test_demo.py, tests/integration/test_cli_defects.py,
test_settlement.py), and a burst of WebSocket viewers over several processes (``viewer_burst``). Not a
test module."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from conftest import timeout

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProc:
    """A `livesale serve` process; its stdout+stderr are drained into ``lines``."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._drain())

    @classmethod
    async def start(cls, env: dict[str, str], args: tuple[str, ...] = (), command: str = "serve",
                    unset: tuple[str, ...] = ()) -> ServerProc:
        full = {**os.environ, "PYTHONPATH": str(ROOT), "LIVESALE_LOG_LEVEL": "WARNING", **env}
        for name in unset:
            full.pop(name, None)
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "server.cli", command, *args,
                                                    cwd=str(ROOT),
                                                    env=full, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT,
                                                    limit=2**24)  # a long log line never kills the drain
        return cls(proc)

    async def _drain(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.decode(errors="replace").rstrip())
            self._changed.set()
        self._changed.set()

    async def wait_lines(self, needle: str, count: int = 1, wait: float = 30.0) -> list[str]:
        async def until() -> list[str]:
            while True:
                found = [ln for ln in self.lines if needle in ln]
                if len(found) >= count:
                    return found
                if self.proc.returncode is not None or self._task.done():
                    raise AssertionError(f"server exited ({self.proc.returncode}) before {needle!r}:\n"
                                         + "\n".join(self.lines[-30:]))
                self._changed.clear()
                await self._changed.wait()
        try:
            return await asyncio.wait_for(until(), timeout(wait))
        except TimeoutError:
            raise AssertionError(f"no {needle!r} within {wait}s:\n" + "\n".join(self.lines[-30:])) from None

    async def stop(self, wait: float = 20.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = await asyncio.wait_for(self.proc.wait(), timeout(wait))
        except TimeoutError:
            self.proc.kill()
            try:  # bounded: a wait that never returns must not hang the test run
                rc = await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                rc = -9
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, 5)
        return rc


VIEWER_BURST_PROC = ROOT / "tests" / "viewer_burst_proc.py"


async def viewer_burst(base: str, room: str, sale: str, viewers: list[tuple[str, str]], procs: int,
                       ready_s: float = 60.0) -> list[list[Any]]:
    """``viewers`` ([token, kind]) spread over ``procs`` OS processes (tests/viewer_burst_proc.py), every
    socket joined first (READY from each), then one ``buy`` each at GO: every [kind, code, hold,
    units_left], in no particular order."""
    shares = [viewers[i::procs] for i in range(procs)]
    children = []
    try:
        for share in shares:
            p = await asyncio.create_subprocess_exec(
                sys.executable, str(VIEWER_BURST_PROC), cwd=str(ROOT), limit=2**24, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            children.append(p)
            assert p.stdin is not None
            p.stdin.write((json.dumps({"base": base, "room": room, "sale": sale, "viewers": share}) + "\n").encode())
            await p.stdin.drain()
        for p in children:
            assert p.stdout is not None and p.stderr is not None
            line = await asyncio.wait_for(p.stdout.readline(), timeout(ready_s))
            if line.strip() != b"READY":
                err = await asyncio.wait_for(p.stderr.read(), timeout(10))
                raise AssertionError(f"viewer process not ready: {line!r} {err.decode()[-2000:]}")
        for p in children:
            assert p.stdin is not None
            p.stdin.write(b"GO\n")
        await asyncio.gather(*(p.stdin.drain() for p in children if p.stdin is not None))
        results: list[list[Any]] = []
        for p in children:
            out, err = await asyncio.wait_for(p.communicate(), timeout(ready_s))
            assert p.returncode == 0, err.decode()[-4000:]
            results += json.loads(out.decode().strip().splitlines()[-1])["results"]
        return results
    finally:
        for p in children:
            if p.returncode is None:
                p.kill()
                await p.wait()


ACT_BURST_PROC = ROOT / "tests" / "act_burst_proc.py"


class ActBurst:
    """Viewers spread over OS processes (tests/act_burst_proc.py), every socket joined to ``room``; at
    ``go`` each sends its interaction messages (claim_coupon, vote, enter_draw...) one after another and
    ``go`` returns every [kind, [answer, ...]]. With ``hold`` the sockets stay in the room after
    answering (present at a draw) until ``aclose``."""

    def __init__(self, children: list[asyncio.subprocess.Process]) -> None:
        self.children = children

    @classmethod
    async def start(cls, base: str, room: str, viewers: list[tuple[str, str, list[dict[str, Any]]]], procs: int,
                    hold: bool = False, ready_s: float = 120.0) -> ActBurst:
        burst = cls([])
        try:
            for i in range(procs):
                share = viewers[i::procs]
                p = await asyncio.create_subprocess_exec(
                    sys.executable, str(ACT_BURST_PROC), cwd=str(ROOT), limit=2**26, stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                burst.children.append(p)
                assert p.stdin is not None
                p.stdin.write((json.dumps({"base": base, "room": room, "viewers": share, "hold": hold}) + "\n").encode())
                await p.stdin.drain()
            for p in burst.children:
                assert p.stdout is not None and p.stderr is not None
                line = await asyncio.wait_for(p.stdout.readline(), timeout(ready_s))
                if line.strip() != b"READY":
                    err = await asyncio.wait_for(p.stderr.read(), timeout(10))
                    raise AssertionError(f"viewer process not ready: {line!r} {err.decode()[-2000:]}")
        except BaseException:
            await burst.aclose()
            raise
        return burst

    async def go(self, wait_s: float = 120.0) -> list[list[Any]]:
        for p in self.children:
            assert p.stdin is not None
            p.stdin.write(b"GO\n")
        await asyncio.gather(*(p.stdin.drain() for p in self.children if p.stdin is not None))
        results: list[list[Any]] = []
        for p in self.children:
            assert p.stdout is not None
            line = await asyncio.wait_for(p.stdout.readline(), timeout(wait_s))
            if not line:
                err = await p.stderr.read() if p.stderr is not None else b""
                raise AssertionError(f"viewer process failed: {err.decode()[-4000:]}")
            results += json.loads(line.decode())["results"]
        return results

    async def aclose(self) -> None:
        for p in self.children:
            if p.returncode is None and p.stdin is not None:
                with contextlib.suppress(Exception):
                    p.stdin.write(b"CLOSE\n")
                    await p.stdin.drain()
        for p in self.children:
            try:
                await asyncio.wait_for(p.wait(), 15)
            except TimeoutError:
                p.kill()
                await p.wait()
