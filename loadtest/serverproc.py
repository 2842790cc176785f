"""Start and stop our server (``python -m server.cli serve``) and the peers, as subprocesses.

Everything here goes through the command line, the environment and HTTP: the server's modules are
never imported.

``Worktree`` checks another commit out in a temporary ``git worktree`` (removed on exit, also on an
exception or Ctrl-C) so that ``Livesale(root=worktree.path)`` runs that commit's server with this
virtualenv: the child gets ``cwd`` and ``PYTHONPATH`` = the worktree (``code_env``), which come before
the editable install's finder on ``sys.path``; ``check_imports_from`` proves it in a child process.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
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
SERVER_PACKAGES = ("server", "stream_gateway", "inventory", "commerce")  # commerce: only where it exists


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


_LIVE: set[Proc] = set()


@atexit.register
def stop_all() -> None:  # never leave a server behind, whatever happened (nor its temp dir)
    for p in list(_LIVE):
        with contextlib.suppress(Exception):
            p.stop(timeout=5)
            p.cleanup()


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

    def start(self, timeout: float = 90.0) -> Proc:
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=self.cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            if self.ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} not ready on {self.url} after {timeout}s: {self.tail()}")

    def ready(self) -> bool:
        """Started and serving (polled by ``start``): its ready path answers 200."""
        return _get(self.url + self.ready_path) == 200

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


def code_env(root: Path = ROOT) -> dict:
    """Environment additions that make a child ``python`` import the server packages from ``root``
    (``PYTHONPATH`` first on ``sys.path``, ahead of the editable install's finder); run it with cwd=root too."""
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"PYTHONPATH": os.pathsep.join([str(root)] + rest)}


def import_origins(root: Path = ROOT, env: dict | None = None) -> dict[str, str | None]:
    """Where a child ``python`` with ``code_env(root)`` and cwd=root finds each of SERVER_PACKAGES (None: absent).
    Finds the packages without running them (``importlib.util.find_spec``)."""
    code = ("import importlib.util, json, sys\n"
            "out = {}\n"
            "for n in sys.argv[1:]:\n"
            "    s = importlib.util.find_spec(n)\n"
            "    out[n] = s.origin if s else None\n"
            "print(json.dumps(out))\n")
    full = dict(os.environ, **code_env(root), **(env or {}))
    out = subprocess.run([sys.executable, "-c", code, *SERVER_PACKAGES], env=full, cwd=root, capture_output=True,
                         text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"import check in {root} failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_imports_from(root: Path = ROOT) -> dict[str, str]:
    """Raise unless a child started the way ``Livesale(root=root)`` starts imports ``server``,
    ``stream_gateway`` and ``inventory`` (and ``commerce`` where it exists) from ``root``."""
    root = Path(root).resolve()
    found = import_origins(root)
    # a package the tree does not have (an older commit has no ``commerce``) may resolve elsewhere: that
    # tree's code never imports it
    bad = {n: o for n, o in found.items()
           if o is not None and (root / n).is_dir() and not Path(o).resolve().is_relative_to(root)}
    missing = [n for n in ("server", "stream_gateway", "inventory") if not found.get(n)]
    if bad or missing:
        raise RuntimeError(f"a child with PYTHONPATH={root} imports {bad or ''} outside it"
                           + (f", cannot find {missing}" if missing else ""))
    return {n: o for n, o in found.items() if o}


def git(*args: str, cwd: Path = ROOT, timeout: float = 120) -> str:
    """Run git (no optional locks: never rewrites the main tree's index), return stdout; raise on failure."""
    out = subprocess.run(["git", "--no-optional-locks", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def checkout_label(root: Path = ROOT) -> str:
    """``<short sha>`` of HEAD in ``root``, with ``+ uncommitted changes`` when the tree is dirty."""
    short = git("rev-parse", "--short", "HEAD", cwd=root).strip()
    dirty = [ln for ln in git("status", "--porcelain", cwd=root).splitlines() if ln.strip()]
    return short + (f" + uncommitted changes ({len(dirty)} paths)" if dirty else "")


WORKTREE_PREFIX = "livesale-baseline-"


class Worktree:
    """``git worktree add --detach <tmp>/livesale-baseline-<short sha>-<pid> <rev>``, removed on exit.

    Use as a context manager (or ``create()`` / ``remove()``); ``remove()`` also runs at interpreter exit
    if it was not called (an exception or Ctrl-C that skipped the ``with`` block's end). Worktrees left by
    a killed run (their pid gone) are removed by the next ``create()``."""

    def __init__(self, rev: str, repo: Path = ROOT, base_dir: str | Path | None = None) -> None:
        self.repo = Path(repo)
        self.rev = rev
        try:
            self.sha = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", cwd=self.repo).strip()
        except RuntimeError:
            raise ValueError(f"not a commit in {self.repo}: {rev!r}") from None
        self.short = git("rev-parse", "--short", self.sha, cwd=self.repo).strip()
        base = Path(base_dir or tempfile.gettempdir())
        self.path = base / f"{WORKTREE_PREFIX}{self.short}-{os.getpid()}"
        self._made = False

    def create(self) -> Worktree:
        self.sweep_stale(self.repo)
        if self.path.exists():
            self._remove_path()
        git("worktree", "add", "--detach", str(self.path), self.sha, cwd=self.repo, timeout=300)
        self._made = True
        atexit.register(self.remove)
        return self

    def remove(self) -> None:
        if not self._made:
            return
        self._made = False
        with contextlib.suppress(Exception):
            atexit.unregister(self.remove)
        self._remove_path()

    def _remove_path(self) -> None:
        try:
            git("worktree", "remove", "--force", str(self.path), cwd=self.repo)
        except Exception:
            shutil.rmtree(self.path, ignore_errors=True)  # e.g. never registered: drop the files, then prune
        with contextlib.suppress(Exception):
            git("worktree", "prune", cwd=self.repo)

    def __enter__(self) -> Worktree:
        return self.create()

    def __exit__(self, *exc) -> None:
        self.remove()

    @staticmethod
    def listed(repo: Path = ROOT) -> list[Path]:
        """Paths of the repository's worktrees (``git worktree list``)."""
        return [Path(ln[len("worktree "):]) for ln in git("worktree", "list", "--porcelain", cwd=repo).splitlines()
                if ln.startswith("worktree ")]

    @staticmethod
    def sweep_stale(repo: Path = ROOT) -> None:
        """Remove our worktrees whose creating process is gone (a run killed before it could clean up)."""
        for p in Worktree.listed(repo):
            m = re.fullmatch(re.escape(WORKTREE_PREFIX) + r"[0-9a-f]+-(\d+)", p.name)
            if not m:
                continue
            pid = int(m.group(1))
            if pid != os.getpid() and Path(f"/proc/{pid}").exists():
                continue  # another run's, still alive
            with contextlib.suppress(Exception):
                git("worktree", "remove", "--force", str(p), cwd=repo)
        with contextlib.suppress(Exception):
            git("worktree", "prune", cwd=repo)


class Livesale(Proc):
    """``python -m server.cli serve`` on embedded defaults in a temp data dir. ``root``: the source tree whose
    ``server`` package runs (default: this checkout; a ``Worktree.path`` for a baseline), with this
    interpreter: the child gets cwd=root and PYTHONPATH=root (``code_env``)."""

    def __init__(self, port: int | None = None, data_dir: str | None = None, cores: set[int] | None = None,
                 env: dict | None = None, root: Path | None = None) -> None:
        port = port or free_port()
        self.root = Path(root or ROOT)
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="ls-data-")
        self.secret = secrets.token_hex(32)
        base = {"LIVESALE_PORT": str(port), "LIVESALE_DATA_DIR": self.data_dir, "LIVESALE_SECRET": self.secret,
                "LIVESALE_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
                # load tests and benchmarks measure today's `pay` (confirm at once): the explicit instant mode
                "LIVESALE_PAYMENT_MODE": "instant", **code_env(self.root)}
        super().__init__("livesale", [sys.executable, "-m", "server.cli", "serve"], port, dict(base, **(env or {})),
                         cwd=self.root, cores=cores, ready_path="/api/time", log_dir=Path(self.data_dir))
        # embedded defaults: a REDIS_URL / DATABASE_URL of the calling shell (a test run against the machine's
        # services) is not inherited, only one passed in ``env``
        for name in ("REDIS_URL", "DATABASE_URL"):
            if name not in (env or {}):
                self.env.pop(name, None)

    def running_from(self) -> str:
        """The listening process's cwd (``/proc/<pid>/cwd``): ``root`` when it runs the code we meant."""
        return os.readlink(f"/proc/{self.pid()}/cwd")

    def host_token(self, host_id: str = "loadhost") -> str:
        out = subprocess.run([sys.executable, "-m", "server.cli", "token", "--host", host_id], env=self.env,
                             cwd=self.root, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"server.cli token failed: {out.stderr.strip()}")
        return out.stdout.strip().splitlines()[-1].strip()

    def cleanup(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


class Settler(Proc):
    """``python -m server.cli settle`` (the settlement worker, the hold reaper and the signal sink) from
    ``root``; ready when it prints that it runs. No HTTP port. ``nice``: its scheduling niceness (19: it
    runs on whatever CPU its core leaves over, as asynchronous settlement may)."""

    READY = b"settlement worker running"

    def __init__(self, env: dict, cores: set[int] | None, log_dir: Path, root: Path | None = None,
                 nice: int = 0) -> None:
        root = Path(root or ROOT)
        cmd = (["nice", "-n", str(nice)] if nice else []) + [sys.executable, "-m", "server.cli", "settle"]
        super().__init__("settle", cmd, 0, dict(env, **code_env(root)), cwd=root, cores=cores, log_dir=log_dir)

    def ready(self) -> bool:
        return self.READY in self.log_path.read_bytes()

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # taskset and nice exec the command: the same pid


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
