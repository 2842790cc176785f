"""A private Valkey/Redis Cluster on loopback, for development and tests (``livesale serve --cluster N``).

``masters * (1 + replicas)`` server processes (the same binary as the single embedded server:
``find_server_binary``), each in ``<data dir>/cluster/<port>/`` with its own ``nodes.conf``, AOF
(``appendfsync everysec``) and ``noeviction``. The cluster is formed from Python, without
``valkey-cli``: slots split evenly over the masters, config epochs 1..N, MEET, REPLICATE, then
``start()`` returns once every node reports ``cluster_state:ok`` with all 16384 slots and every
replica's link to its master is up.

The cluster is disposable: ``start()`` deletes every node directory left by an earlier run (a
leftover ``nodes.conf`` would rejoin the old cluster) and ``stop()`` deletes them too, so its
data does not outlive the process; SQL stays the system of record. ``kill``/``restart``/
``wait_failover`` exist for failover tests. Nodes listen on TCP (cluster mode needs it) on free
ports, die with their parent (PR_SET_PDEATHSIG) and are tracked by pid: the server rewrites its
process title. One ``EmbeddedCluster`` per data directory at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from redis import Redis
from redis.crc import key_slot
from redis.exceptions import RedisError

from .embedded import _die_with_parent, find_server_binary

__all__ = ["ClusterNode", "EmbeddedCluster", "EmbeddedClusterError", "NodeView", "parse_cluster_nodes"]

log = logging.getLogger(__name__)

SLOTS = 16384
_PORT_LO, _PORT_HI = 17000, 32000  # probed ports stay below Linux's ephemeral range (32768-60999)
_BAD_FLAGS = frozenset({"fail", "fail?", "handshake", "noaddr"})

Role = Literal["master", "replica"]


class EmbeddedClusterError(RuntimeError):
    """The embedded cluster could not be started, formed or operated."""


@dataclass
class ClusterNode:
    """One server of the cluster as this process knows it (``role``/``master_id`` follow failovers)."""

    port: int
    bus_port: int
    dir: Path
    role: Role
    node_id: str = ""
    pid: int = 0
    master_id: str | None = None  # a replica's master


@dataclass(frozen=True)
class NodeView:
    """One line of ``CLUSTER NODES``: how one node sees another."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def healthy(self) -> bool:
        return not self.flags & _BAD_FLAGS


def parse_cluster_nodes(text: str) -> list[NodeView]:
    """``<id> <ip:port@bus[,host]> <flags> <master|-> <ping> <pong> <epoch> <link> <slot>...``;
    slots being imported/migrated (``[...]``) are skipped."""
    views = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        addr = parts[1].split(",", 1)[0].split("@", 1)[0]
        port = int(addr.rsplit(":", 1)[1] or 0)
        slots = []
        for s in parts[8:]:
            if s.startswith("["):
                continue
            lo, _, hi = s.partition("-")
            slots.append((int(lo), int(hi or lo)))
        views.append(NodeView(parts[0], port, frozenset(parts[2].split(",")),
                              None if parts[3] == "-" else parts[3], tuple(slots)))
    return views


def _info(text: str) -> dict[str, str]:
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_ports(host: str, count: int) -> list[int]:
    """``count`` ports nothing listens on, probed upwards from a random start (two runs on one
    machine rarely probe the same ones; a lost race is retried by ``start``)."""
    start = random.randrange(_PORT_LO, _PORT_HI)
    found: list[int] = []
    for i in range(_PORT_HI - _PORT_LO):
        port = _PORT_LO + (start - _PORT_LO + i) % (_PORT_HI - _PORT_LO)
        if _port_free(host, port):
            found.append(port)
            if len(found) == count:
                return found
    raise EmbeddedClusterError(f"no {count} free ports between {_PORT_LO} and {_PORT_HI} on {host}")


def _ping(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class _PortTaken(EmbeddedClusterError):
    """A node could not bind its port: another process took it after the probe."""


class EmbeddedCluster:
    """Start/stop a private cluster; ``url`` is a seed node for redis-py's ``RedisCluster``."""

    def __init__(self, data_dir: Path, masters: int = 3, replicas: int = 1, *, node_timeout_ms: int = 1000,
                 host: str = "127.0.0.1", base_port: int | None = None, binary: str | None = None) -> None:
        if masters < 1:
            raise EmbeddedClusterError(f"masters={masters}: a cluster needs at least one master")
        if replicas < 0:
            raise EmbeddedClusterError(f"replicas={replicas}: expected 0 or more")
        if base_port is not None and not 1 <= base_port <= 65535 - 10000 - masters * (1 + replicas):
            raise EmbeddedClusterError(f"base_port={base_port}: the node ports and their bus ports "
                                       f"(port+10000) must stay below 65536")
        self.dir = Path(data_dir).resolve() / "cluster"
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.host = host
        self.base_port = base_port
        self.binary = binary or find_server_binary()
        self.nodes: list[ClusterNode] = []
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        # PR_SET_PDEATHSIG fires when the *thread* that forked the child ends: every node is forked by
        # this one long-lived thread, so a node started from a short-lived thread (asyncio.to_thread,
        # a test's event loop executor) is not killed when that thread goes away.
        self._spawner: ThreadPoolExecutor | None = None

    # -- public API --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The first master's address; once it was killed, the first live node's (a client started
        then must not be seeded with a dead node)."""
        if not self.nodes:
            raise EmbeddedClusterError("the embedded cluster is not started")
        live = self._live_ports()
        port = next((n.port for n in self.nodes if n.port in live), self.nodes[0].port)
        return f"redis://{self.host}:{port}"

    @property
    def size(self) -> int:
        return self.masters * (1 + self.replicas)

    def start(self, timeout: float = 30.0) -> str:
        """Start and form the cluster; returns ``url`` once it is fully ready."""
        if self.nodes:
            raise EmbeddedClusterError("the embedded cluster is already started")
        self._stop_leftovers()
        attempts = 1 if self.base_port is not None else 3
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout)
                log.info("embedded cluster: %d masters, %d replicas each, seed %s",
                         self.masters, self.replicas, self.url)
                return self.url
            except _PortTaken as exc:
                self.stop()
                if attempt == attempts:
                    raise EmbeddedClusterError(str(exc)) from None
                log.warning("embedded cluster: %s; retrying on other ports", exc)
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every node, SIGKILL those still up after ``timeout``, then delete the node
        directories: the cluster's data is disposable (SQL is the system of record)."""
        procs = list(self._procs.values())
        self._procs.clear()
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("embedded cluster node pid %s did not stop: killing it", proc.pid)
                proc.kill()
                proc.wait()
        self.nodes = []
        if self._spawner is not None:
            self._spawner.shutdown(wait=True)
            self._spawner = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def master_for(self, key: str) -> ClusterNode:
        """The node serving ``key``'s slot now (asked of a live node: follows failovers)."""
        slot = key_slot(key.encode())
        for view in self._view():
            if view.is_master and view.healthy and any(lo <= slot <= hi for lo, hi in view.slots):
                return self._by_id(view.node_id)
        raise EmbeddedClusterError(f"no live master serves slot {slot} (key {key!r})")

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL one node (no AOF flush, no goodbye to the others): a crash, for failover tests."""
        proc = self._procs.get(node.port)
        if proc is None or proc.poll() is not None:
            raise EmbeddedClusterError(f"node {node.port} is not running")
        proc.kill()
        proc.wait()

    def restart(self, node: ClusterNode, timeout: float = 30.0) -> ClusterNode:
        """Start a killed node again from its own directory (its ``nodes.conf`` and AOF): it rejoins,
        as a replica if its slots moved to another node meanwhile. Returns once the cluster is ready."""
        proc = self._procs.get(node.port)
        if proc is not None and proc.poll() is None:
            raise EmbeddedClusterError(f"node {node.port} is still running")
        deadline = time.monotonic() + timeout
        self._spawn(node)
        self._wait_up([node], deadline)
        self._wait_ready(deadline, expect_roles=False)
        self._refresh()
        return node

    def wait_failover(self, old_master: ClusterNode, timeout: float = 10.0) -> ClusterNode:
        """Wait until a replica of ``old_master`` (killed) serves its slots, as every live node sees
        it; returns that replica, now a master."""
        candidates = {n.node_id for n in self.nodes if n.master_id == old_master.node_id}
        if not candidates:
            raise EmbeddedClusterError(f"node {old_master.port} has no replica to fail over to")
        deadline = time.monotonic() + timeout
        last = "no live node answered"
        while True:
            promoted: set[str] | None = None
            try:
                for port in self._live_ports():
                    if port == old_master.port:
                        continue
                    seen = {v.node_id for v in self._view(port)
                            if v.node_id in candidates and v.is_master and v.healthy and v.slots}
                    promoted = seen if promoted is None else promoted & seen
                if promoted:
                    self._refresh()
                    return self._by_id(next(iter(promoted)))
                last = "no replica promoted yet"
            except (RedisError, OSError) as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                raise EmbeddedClusterError(f"no replica of node {old_master.port} took over within "
                                           f"{timeout}s: {last}")
            time.sleep(0.05)

    def __enter__(self) -> EmbeddedCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- starting ----------------------------------------------------------------------------------

    def _plan(self) -> list[ClusterNode]:
        """Masters first, then each master's replicas; ports fixed (base_port) or probed."""
        n = self.size
        if self.base_port is not None:
            pairs = [(self.base_port + i, self.base_port + i + 10000) for i in range(n)]
            taken = [p for pair in pairs for p in pair if not _port_free(self.host, p)]
            if taken:
                raise EmbeddedClusterError(f"embedded cluster ports in use on {self.host}: "
                                           f"{', '.join(map(str, taken))} (base_port={self.base_port})")
        else:
            free = _free_ports(self.host, 2 * n)
            pairs = [(free[2 * i], free[2 * i + 1]) for i in range(n)]
        return [ClusterNode(port, bus, self.dir / str(port), "master" if i < self.masters else "replica")
                for i, (port, bus) in enumerate(pairs)]

    def _start_once(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        shutil.rmtree(self.dir, ignore_errors=True)
        self.nodes = self._plan()
        for node in self.nodes:
            node.dir.mkdir(parents=True)
            self._spawn(node)
        self._wait_up(self.nodes, deadline)
        self._form(deadline)
        self._wait_ready(deadline, expect_roles=True)
        self._refresh()

    def _spawn(self, node: ClusterNode) -> None:
        args = [
            self.binary,
            "--port", str(node.port),
            "--bind", self.host,
            "--cluster-enabled", "yes",
            "--cluster-port", str(node.bus_port),
            "--cluster-config-file", str(node.dir / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # a shard whose master is down (until its replica takes over) must not stop the others: with the
            # default (yes) every node answers CLUSTERDOWN for every slot while any slot is uncovered, so one
            # slow failover stalled every sale of every shard (docs/SCALING.md)
            "--cluster-require-full-coverage", "no",
            "--dir", str(node.dir),
            "--pidfile", str(node.dir / "server.pid"),
            "--daemonize", "no",
            "--repl-diskless-sync-delay", "0",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(node.dir / "server.log"),
            "--loglevel", "warning",
        ]
        if self._spawner is None:
            self._spawner = ThreadPoolExecutor(1, thread_name_prefix="embedded-cluster")
        with open(node.dir / "stderr.log", "ab") as err:
            proc = self._spawner.submit(self._popen, args, err).result()
        self._procs[node.port] = proc
        node.pid = proc.pid

    @staticmethod
    def _popen(args: list[str], err: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                preexec_fn=_die_with_parent, start_new_session=True)

    def _wait_up(self, nodes: Iterable[ClusterNode], deadline: float) -> None:
        waiting = list(nodes)
        while waiting:
            for node in list(waiting):
                proc = self._procs[node.port]
                if proc.poll() is not None:
                    tail = self._log_tail(node)
                    if "Address already in use" in tail or "Could not create server TCP" in tail:
                        raise _PortTaken(f"node {node.port}: port {node.port} or {node.bus_port} taken")
                    raise EmbeddedClusterError(f"embedded cluster node {node.port} exited with "
                                               f"{proc.returncode}: {tail}")
                if _ping(self.host, node.port):
                    waiting.remove(node)
            if waiting and time.monotonic() >= deadline:
                raise EmbeddedClusterError(f"embedded cluster nodes {[n.port for n in waiting]} did not answer")
            if waiting:
                time.sleep(0.02)

    def _form(self, deadline: float) -> None:
        first = self.nodes[0]
        with self._clients(self.nodes) as clients:
            for node, c in zip(self.nodes, clients, strict=True):
                node.node_id = str(c.execute_command("CLUSTER", "MYID"))
            masters = self.nodes[: self.masters]
            for i, c in enumerate(clients[: self.masters]):
                lo, hi = i * SLOTS // self.masters, (i + 1) * SLOTS // self.masters - 1
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
                c.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            for c in clients[1:]:
                c.execute_command("CLUSTER", "MEET", self.host, first.port, first.bus_port)
            self._until(deadline, "the nodes did not all meet", lambda: self._handshake_problems(clients))
            for k, node in enumerate(self.nodes[self.masters:]):
                master = masters[k % self.masters]
                node.master_id = master.node_id
                clients[self.masters + k].execute_command("CLUSTER", "REPLICATE", master.node_id)

    def _handshake_problems(self, clients: list[Redis]) -> list[str]:
        ids = {n.node_id for n in self.nodes}
        problems = []
        for node, c in zip(self.nodes, clients, strict=True):
            views = parse_cluster_nodes(str(c.execute_command("CLUSTER", "NODES")))
            known = {v.node_id for v in views if v.healthy}
            if known != ids:
                problems.append(f"node {node.port} knows {len(known)} of {len(ids)} nodes")
        return problems

    def _wait_ready(self, deadline: float, *, expect_roles: bool) -> None:
        self._until(deadline, "the embedded cluster is not ready", lambda: self._ready_problems(expect_roles))

    def _ready_problems(self, expect_roles: bool) -> list[str]:
        """Empty when every live node says ``cluster_state:ok`` with all slots, knows every live node
        as healthy, every slot owner is a master with slots, and each replica's link is up."""
        ports = set(self._live_ports())  # a killed node (failover tests) is left out
        live = [n for n in self.nodes if n.port in ports]
        live_ids = {n.node_id for n in live}
        problems = []
        with self._clients(live) as clients:
            for node, c in zip(live, clients, strict=True):
                info = _info(str(c.execute_command("CLUSTER", "INFO")))
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                    problems.append(f"node {node.port}: cluster_state:{info.get('cluster_state')} "
                                    f"slots_ok:{info.get('cluster_slots_ok')}")
                    continue
                views = {v.node_id: v for v in parse_cluster_nodes(str(c.execute_command("CLUSTER", "NODES")))}
                for nid in live_ids:
                    v = views.get(nid)
                    if v is None or not v.healthy or (v.is_master and not v.slots):
                        problems.append(f"node {node.port} sees {self._by_id(nid).port} as "
                                        f"{'unknown' if v is None else ','.join(sorted(v.flags))}")
                if expect_roles:
                    for expected in self.nodes:
                        v = views.get(expected.node_id)
                        if v is not None and v.is_master != (expected.role == "master"):
                            problems.append(f"node {node.port} sees {expected.port} as "
                                            f"{','.join(sorted(v.flags))}, not {expected.role}")
                repl = _info(str(c.execute_command("INFO", "replication")))
                if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                    problems.append(f"replica {node.port}: master_link_status:{repl.get('master_link_status')}")
        return problems

    def _until(self, deadline: float, what: str, problems: Callable[[], list[str]]) -> None:
        last: list[str] = []
        while True:
            try:
                last = problems()
            except (RedisError, OSError) as exc:
                last = [f"{type(exc).__name__}: {exc}"]
            if not last:
                return
            if time.monotonic() >= deadline:
                raise EmbeddedClusterError(f"{what} in time: {'; '.join(last[:6])}")
            time.sleep(0.05)

    # -- views and bookkeeping ---------------------------------------------------------------------

    def _live_ports(self) -> list[int]:
        return [port for port, proc in self._procs.items() if proc.poll() is None]

    def _view(self, port: int | None = None) -> list[NodeView]:
        """CLUSTER NODES as seen by ``port`` (default: the first live node that answers)."""
        ports = [port] if port is not None else self._live_ports()
        error: Exception | None = None
        for p in ports:
            try:
                with self._client(p) as c:
                    return parse_cluster_nodes(str(c.execute_command("CLUSTER", "NODES")))
            except (RedisError, OSError) as exc:
                error = exc
        raise EmbeddedClusterError(f"no live node answered CLUSTER NODES: {error}")

    def _refresh(self) -> None:
        """Roles and masters from a live node's view (they change on failover and rejoin)."""
        views = {v.node_id: v for v in self._view()}
        for node in self.nodes:
            v = views.get(node.node_id)
            if v is not None:
                node.role = "master" if v.is_master else "replica"
                node.master_id = None if v.is_master else v.master_id

    def _by_id(self, node_id: str) -> ClusterNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise EmbeddedClusterError(f"unknown node id {node_id}")

    def _client(self, port: int) -> Redis:
        return Redis(host=self.host, port=port, decode_responses=True, socket_timeout=2,
                     socket_connect_timeout=1)

    @contextlib.contextmanager
    def _clients(self, nodes: Iterable[ClusterNode]) -> Iterator[list[Redis]]:
        clients = [self._client(n.port) for n in nodes]
        try:
            yield clients
        finally:
            for c in clients:
                c.close()

    def _log_tail(self, node: ClusterNode) -> str:
        tail = ""
        for name in ("stderr.log", "server.log"):
            with contextlib.suppress(OSError):
                tail += (node.dir / name).read_text(errors="replace")[-1500:]
        return tail.strip()

    def _stop_leftovers(self) -> None:
        """A crashed run may have left nodes behind: stop each process whose pid file is in a node
        directory and whose working directory is that directory (the server chdirs to ``--dir``)."""
        if not self.dir.is_dir():
            return
        pids = []
        for node_dir in self.dir.iterdir():
            try:
                pid = int((node_dir / "server.pid").read_text().strip())
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except (OSError, ValueError):
                continue
            if pid > 0 and Path(cwd) == node_dir.resolve():
                log.warning("stopping leftover embedded cluster node pid %s (%s)", pid, node_dir)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                pids.append(pid)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
            time.sleep(0.05)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
