"""A `livesale serve` (or other `livesale` command) subprocess for the tests that start real server
processes (tests/e2e/test_multiprocess.py, test_demo.py, tests/integration/test_cli_defects.py,
test_settlement.py), a burst of buyers over several processes (``viewer_burst``) and of interaction messages
(``ActBurst``: claims, votes, draw entries). Not a
test module."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Collection, Sequence
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


def split_env(secret: str, redis_url: str, database_url: str, data_dir: Path, port: int,
              **extra: str) -> dict[str, str]:
    """The environment of one process of a multi-process test: gateways without settlement inside
    (`livesale settle` runs it), instant payments, fast settlement reads; ``extra`` adds settings."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return {"LIVESALE_PORT": str(port), "LIVESALE_DATA_DIR": str(data_dir), "LIVESALE_SECRET": secret,
            "REDIS_URL": redis_url, "DATABASE_URL": database_url, "LIVESALE_PAYMENT_MODE": "instant",
            "LIVESALE_TICK_MS": "500", "LIVESALE_SETTLE_IN_PROCESS": "0", "LIVESALE_SETTLE_BLOCK_MS": "200",
            **extra}


async def stop_all(*servers: ServerProc, wait: float = 30.0) -> list[Any]:
    """Stop several server processes at once, bounded (``ServerProc.stop``'s last wait never returns once
    its output reader has died): their exit codes, or ["did not stop", ...] after killing them."""
    try:
        return list(await asyncio.wait_for(asyncio.gather(*(s.stop(wait) for s in servers)), timeout(2 * wait)))
    except TimeoutError:
        for s in servers:
            if s.proc.returncode is None:
                s.proc.kill()
        return ["did not stop", *(s.proc.returncode for s in servers)]


VIEWER_BURST_PROC = ROOT / "tests" / "viewer_burst_proc.py"


async def spawn_with_config(script: Path, cfg: dict[str, Any]) -> asyncio.subprocess.Process:
    """A helper process (``tests/*_proc.py``) with its config written as one JSON line to its stdin."""
    p = await asyncio.create_subprocess_exec(sys.executable, str(script), cwd=str(ROOT), limit=2**26,
                                             stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.PIPE)
    assert p.stdin is not None
    p.stdin.write((json.dumps(cfg) + "\n").encode())
    await p.stdin.drain()
    return p


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

Act = tuple[str, str, list[dict[str, Any]]]               # (token, kind, messages): a viewer on the burst's base
ActOn = tuple[str, str, list[dict[str, Any]], str]        # (token, kind, messages, base): on a gateway of its own


class ActBurst:
    """Viewers (``Act``: on ``base``; ``ActOn``: on a gateway of their own) spread over ``procs`` OS
    processes (tests/act_burst_proc.py), every socket joined to ``room`` first: process k connects from its
    own source address (``sources[k]``, by default 127.0.0.{2+k}; None: the system's choice) with at most
    ``concurrency`` joins under way at once. At ``go`` each viewer sends its interaction messages
    (claim_coupon, vote, enter_draw...) one after another, and ``go`` returns every [kind, [answer, ...]] in
    the order of ``viewers``: one answer per message, {"type": "NO_ANSWER"} when none came within
    ``answer_s``, {"type": "CLOSED_SOCKET"} when the socket closed first. ``go(fill=...)`` gives values known
    only at GO: a message field whose value is the string "{name}" is sent as ``fill[name]`` (e.g. the id of
    a draw opened after the joins: {"type": "enter_draw", "draw": "{draw}"}, ``fill={"draw": draw_id}``).
    With ``hold`` the sockets stay in the room after answering (present at a draw) until ``release`` or
    ``aclose``; each collects the messages pushed to it whose type is in ``collect`` (e.g. draw_result,
    draw_won), which ``release`` returns."""

    def __init__(self, hold: bool) -> None:
        self.hold = hold
        self._released = False
        self.children: list[asyncio.subprocess.Process] = []
        self._stderr: list[asyncio.Task[bytes]] = []  # each child's stderr, read as it comes (never a full pipe)

    @classmethod
    async def start(cls, base: str, room: str, viewers: list[Act] | list[ActOn], procs: int, *, hold: bool = False,
                    sources: list[str | None] | None = None, concurrency: int = 100, answer_s: float = 60.0,
                    ready_s: float = 120.0, collect: Collection[str] = ()) -> ActBurst:
        srcs = sources if sources is not None else [f"127.0.0.{2 + k}" for k in range(procs)]
        assert len(srcs) == procs, (srcs, procs)
        assert hold or not collect, "collect needs hold: the messages are returned by release"
        burst = cls(hold)
        try:
            for k in range(procs):
                cfg = {"room": room, "src": srcs[k], "timeout": timeout(answer_s), "concurrency": concurrency,
                       "hold": hold, "collect": sorted(collect),
                       "viewers": [[v[3] if len(v) > 3 else base, v[0], v[1], v[2]] for v in viewers[k::procs]]}
                p = await asyncio.create_subprocess_exec(
                    sys.executable, str(ACT_BURST_PROC), cwd=str(ROOT), limit=2**26, stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                burst.children.append(p)
                assert p.stdin is not None and p.stderr is not None
                burst._stderr.append(asyncio.create_task(p.stderr.read()))
                p.stdin.write((json.dumps(cfg) + "\n").encode())
                await p.stdin.drain()
            for k in range(procs):
                await burst._expect(k, b"READY", ready_s)
        except BaseException:
            await burst.aclose()
            raise
        return burst

    async def go(self, wait_s: float = 120.0, fill: dict[str, Any] | None = None) -> list[list[Any]]:
        """Every [kind, [answer, ...]], in the order of the viewers; ``fill``: the placeholders' values."""
        line = b"GO " + json.dumps(fill).encode() if fill else b"GO"
        return await self._exchange([line] * len(self.children), b'{"results"', "results", wait_s)

    async def release(self, until: Sequence[Collection[str]] | None = None,
                      wait_s: float = 60.0) -> list[list[dict[str, Any]]]:
        """End the hold: first wait (at most ``wait_s``) until viewer i has collected a message of each type
        in ``until[i]`` (``until``: in the order of the viewers; None: no wait), then close the sockets and
        return what each collected, in the order of the viewers (a list that ends with {"type":
        "CLOSED_SOCKET"}: that socket closed before the release). Whether the wait was met is for the caller
        to check."""
        assert self.hold and not self._released
        self._released = True
        procs = len(self.children)
        lines = [b"RELEASE " + json.dumps({"until": None if until is None else [sorted(t) for t in until[k::procs]],
                                           "wait": timeout(wait_s)}).encode() for k in range(procs)]
        return await self._exchange(lines, b'{"collected"', "collected", wait_s + 30)

    async def _exchange(self, lines: list[bytes], start: bytes, key: str, wait_s: float) -> list[Any]:
        """Child k gets ``lines[k]``; then the ``key`` lists of the children's answer lines (beginning with
        ``start``), back in the order of the viewers."""
        for p, line in zip(self.children, lines, strict=True):
            assert p.stdin is not None
            p.stdin.write(line + b"\n")
        await asyncio.gather(*(p.stdin.drain() for p in self.children if p.stdin is not None))
        shares: list[list[Any]] = [json.loads(await self._expect(k, start, wait_s))[key]
                                   for k in range(len(self.children))]
        out: list[Any] = [None] * sum(map(len, shares))
        for k, share in enumerate(shares):  # process k had viewers[k::procs]
            out[k::len(shares)] = share
        return out

    async def _expect(self, k: int, start: bytes, wait_s: float) -> bytes:
        """Child ``k``'s next stdout line, which must begin with ``start``; else an AssertionError with the
        child's stderr."""
        out = self.children[k].stdout
        assert out is not None
        try:
            line = (await asyncio.wait_for(out.readline(), timeout(wait_s))).strip()
        except TimeoutError:
            line = b"(nothing in time)"
        if not line.startswith(start):
            raise AssertionError(f"viewer process {k}: {start.decode()} expected, got {line[:300]!r}\n"
                                 + await self._stderr_tail(k))
        return line

    async def _stderr_tail(self, k: int) -> str:
        """What child ``k`` wrote to stderr (stopped first, if it still runs)."""
        p = self.children[k]
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
        try:
            err = await asyncio.wait_for(asyncio.shield(self._stderr[k]), timeout(10))
        except TimeoutError:
            err = b"(stderr not closed in time)"
        return err.decode(errors="replace")[-4000:]

    async def aclose(self) -> None:
        """CLOSE to held sockets (unless released) and EOF to every child (one still waiting for GO stops
        too), then wait."""
        for p in self.children:
            if p.returncode is None and p.stdin is not None:
                with contextlib.suppress(Exception):
                    if self.hold and not self._released:
                        p.stdin.write(b"CLOSE\n")
                        await p.stdin.drain()
                    p.stdin.close()

        async def end(p: asyncio.subprocess.Process) -> None:
            try:
                await asyncio.wait_for(p.wait(), timeout(30))
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()

        await asyncio.gather(*(end(p) for p in self.children))
        for t in self._stderr:
            t.cancel()
        await asyncio.gather(*self._stderr, return_exceptions=True)
