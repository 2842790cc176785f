"""Start and stop our server (``python -m server.cli serve``) and the peers, as subprocesses.

Everything here goes through the command line, the environment and HTTP: the server's modules are
never imported.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import lean

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(__file__).resolve().parent / "peers"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, urllib.error.URLError):
        return 0


def _taskset(cores: set[int] | None) -> list[str]:
    if cores and shutil.which("taskset"):
        return ["taskset", "-c", ",".join(str(c) for c in sorted(cores))]
    return []


_LIVE: set["Proc"] = set()


@atexit.register
def _stop_all() -> None:  # never leave a server behind, whatever happened
    for p in list(_LIVE):
        with contextlib.suppress(Exception):
            p.stop(timeout=5)


class Proc:
    """A server subprocess with a log file, started in its own process group."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict | None = None, cwd: Path | None = None,
                 cores: set[int] | None = None, ready_path: str = "/ctl/status", log_dir: Path | None = None) -> None:
        self.name, self.port, self.ready_path = name, port, ready_path
        self.cmd = _taskset(cores) + cmd
        self.env = dict(os.environ, **(env or {}))
        self.cwd = cwd
        self._own_log_dir = log_dir is None
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix=f"ls-{name}-"))
        self.log_path = self.log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> "Proc":
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=self.cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            if _get(self.url + self.ready_path) == 200:
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} not ready on {self.url} after {timeout}s: {self.tail()}")

    def pid(self) -> int:
        """The process that listens on the port (the gateway, not a wrapper like taskset)."""
        assert self.proc is not None
        return lean.listening_pid(self.port, lean.tree_pids(self.proc.pid)) or self.proc.pid

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def cleanup(self) -> None:
        """Remove the temp log dir this object created (call after stop)."""
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def stop(self, timeout: float = 15.0) -> None:
        _LIVE.discard(self)
        if not self.proc or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.log.close()


class Livesale(Proc):
    """``python -m server.cli serve`` on embedded defaults in a temp data dir."""

    def __init__(self, port: int | None = None, data_dir: str | None = None, cores: set[int] | None = None,
                 env: dict | None = None) -> None:
        port = port or free_port()
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="ls-data-")
        self.secret = secrets.token_hex(32)
        base = {"LIVESALE_PORT": str(port), "LIVESALE_DATA_DIR": self.data_dir, "LIVESALE_SECRET": self.secret,
                "LIVESALE_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
        super().__init__("livesale", [sys.executable, "-m", "server.cli", "serve"], port, dict(base, **(env or {})),
                         cwd=ROOT, cores=cores, ready_path="/api/time", log_dir=Path(self.data_dir))

    def host_token(self, host_id: str = "loadhost") -> str:
        out = subprocess.run([sys.executable, "-m", "server.cli", "token", "--host", host_id], env=self.env,
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"server.cli token failed: {out.stderr.strip()}")
        return out.stdout.strip().splitlines()[-1].strip()

    def cleanup(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


def node_peer(name: str, script: str, port: int | None = None, cores: set[int] | None = None) -> Proc:
    return Proc(name, ["node", script, str(port or 0)], port or 0, cwd=PEERS, cores=cores)


def python_peer(name: str, script: str, port: int | None = None, cores: set[int] | None = None) -> Proc:
    return Proc(name, [sys.executable, script, str(port or 0)], port or 0, cwd=PEERS, cores=cores)


def peer(name: str, cores: set[int] | None = None) -> Proc:
    port = free_port()
    if name == "ws":
        return node_peer("node-ws", "ws_server.js", port, cores)
    if name == "socketio":
        return node_peer("node-socketio", "socketio_server.js", port, cores)
    if name == "pysio":
        return python_peer("python-socketio", "pysocketio_server.py", port, cores)
    if name == "aiohttp":
        return python_peer("aiohttp-send_str", "aiohttp_server.py", port, cores)
    raise ValueError(name)


def ensure_peer_deps(log=print) -> None:
    """npm ci the Node peers (lockfile committed) and pip install python-socketio if missing."""
    if not (PEERS / "node_modules" / "ws").exists() or not (PEERS / "node_modules" / "socket.io").exists():
        log("installing the Node peers (npm ci) ...")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEERS, check=True,
                       timeout=600)
    try:
        import socketio  # noqa: F401
    except ImportError:
        log("installing python-socketio ...")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "python-socketio>=5.11"], check=True,
                       timeout=600)


async def setup_room(url: str, host_token: str, room: str = "load", product: str = "p-load") -> None:
    """Create the room and its product over HTTP (idempotent enough for a fresh data dir) and go live."""
    st, body = await lean.http_json("GET", f"{url}/api/rooms/{room}")
    if st == 404:
        st, body = await lean.http_json("POST", f"{url}/api/rooms", {"room_id": room, "title": "Load test room"},
                                        host_token)
        if st not in (200, 201):
            raise RuntimeError(f"POST /api/rooms -> {st} {body}")
    st, body = await lean.http_json("POST", f"{url}/api/rooms/{room}/products", {
        "product_id": product, "sku": "LOAD-1", "title": "Load test tee", "unit_price": 1999, "currency": "EUR"},
        host_token)
    if st not in (200, 201, 409):
        raise RuntimeError(f"POST products -> {st} {body}")
    st, body = await lean.http_json("POST", f"{url}/api/rooms/{room}/actions/go_live", {}, host_token)
    if st not in (200, 201, 409):
        raise RuntimeError(f"go_live -> {st} {body}")
