"""The command line as a new user meets it (issue 9, items 2, 7, 10 and 16).

- `livesale serve` / `livesale demo` / `livesale serve --workers N` on a port another process holds
  exit non-zero at once, naming the address (they used to hang, deaf to SIGTERM and SIGINT); a
  `--workers` parent whose gateway child dies stops and exits non-zero too.
- `livesale settle` refuses to start without DATABASE_URL (a private SQLite file would not be the
  gateways' database).
- `livesale token` says where its secret came from (never the secret), refuses a bad `--ttl`;
  `livesale --version`.
- The documentation states the limits the code enforces and the SQL tables the store creates.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from conftest import timeout
from proc_helpers import ServerProc, free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(180, method="thread")


def _env(tmp_path: Path, unset: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LIVESALE_DATA_DIR": str(tmp_path / "data"),
           "LIVESALE_HOST": "127.0.0.1", "LIVESALE_LOG_LEVEL": "WARNING", **extra}
    for name in unset:
        env.pop(name, None)
    return env


def run_cli(args: list[str], env: dict[str, str], wait: float = 30.0,
            cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``python -m server.cli ARGS``; it must end within ``wait`` seconds (else its whole process
    group is killed, so no child outlives the test, and the test fails)."""
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout(wait))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"`livesale {' '.join(args)}` still running after {wait}s:\n{out}\n{err}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port held by another process's plain listening socket."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


# -- item 2: a busy port --------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["serve"], ["demo"], ["serve", "--workers", "2"]], ids=["serve", "demo", "workers"])
def test_busy_port_exits_at_once_naming_the_address(args: list[str], busy_port: int, tmp_path: Path) -> None:
    # as on a fresh machine (embedded engine, generated secret): nothing may start, nothing may hang
    env = _env(tmp_path, unset=("REDIS_URL", "DATABASE_URL", "LIVESALE_SECRET"))
    started = time.monotonic()
    out = run_cli([*args, "--port", str(busy_port)], env, wait=30)
    assert out.returncode not in (0, None), (out.stdout, out.stderr)
    assert f"livesale: cannot listen on 127.0.0.1:{busy_port}: address already in use" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert time.monotonic() - started < timeout(20)
    # it failed before starting anything: no embedded server was started in the data directory
    assert not (tmp_path / "data" / "valkey").exists()


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(p) for p in (task / "children").read_text().split())
    return {p for p in found if b"server.cli" in Path(f"/proc/{p}/cmdline").read_bytes()}


@pytest.mark.slow
async def test_workers_parent_exits_non_zero_when_a_gateway_child_dies(tmp_path: Path) -> None:
    port = free_port()
    parent = await ServerProc.start({"LIVESALE_DATA_DIR": str(tmp_path / "data"), "LIVESALE_HOST": "127.0.0.1"},
                                    args=("--workers", "2", "--port", str(port)),
                                    unset=("REDIS_URL", "DATABASE_URL", "LIVESALE_SECRET"))
    children: set[int] = set()
    try:
        await parent.wait_lines("livesale listening on", count=2, wait=90)
        children = _children(parent.proc.pid)
        assert len(children) == 2, children
        victim = min(children)
        os.kill(victim, signal.SIGKILL)
        rc = await asyncio.wait_for(parent.proc.wait(), timeout(40))
        assert rc not in (0, None), "\n".join(parent.lines[-30:])
        await parent.wait_lines(f"gateway worker {victim} exited")
        for pid in children - {victim}:  # the other child was stopped, not left behind
            assert not Path(f"/proc/{pid}").exists() or \
                Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", f"child {pid} survived"
    finally:
        await parent.stop()
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# -- item 7: `livesale settle` without DATABASE_URL ------------------------------------------------

def test_settle_needs_database_url(tmp_path: Path, redis_url: str) -> None:
    env = _env(tmp_path, REDIS_URL=redis_url, DATABASE_URL="")
    out = run_cli(["settle"], env, wait=30)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert ("livesale: configuration error: `livesale settle` needs DATABASE_URL (a private SQLite file "
            "would not be the gateways' database)") in out.stderr, out.stderr
    assert not (tmp_path / "data" / "livesale.db").exists()


def test_readme_settle_paragraph_names_database_url() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "`livesale settle` needs DATABASE_URL (a private SQLite file would not be the gateways' database)" \
        in readme


# -- item 16: `livesale token` and `--version` --------------------------------------------------

def test_token_says_where_the_secret_came_from(tmp_path: Path) -> None:
    # outside the project directory, no settings: it creates a secret and says so (absolute path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _env(tmp_path, unset=("LIVESALE_SECRET", "LIVESALE_DATA_DIR"))
    first = run_cli(["token", "--host", "alice"], env, cwd=elsewhere)
    assert first.returncode == 0, first.stderr
    key = elsewhere / ".livesale" / "secret.key"
    secret = key.read_text().strip()
    assert f"secret: {key} (created now)" in first.stderr, first.stderr
    assert secret not in first.stdout + first.stderr
    assert jwt.decode(first.stdout.strip(), secret, algorithms=["HS256"])["sub"] == "alice"

    again = run_cli(["token", "--viewer", "Ana"], env, cwd=elsewhere)
    assert again.returncode == 0, again.stderr
    assert f"secret: {key} (existing)" in again.stderr and "created now" not in again.stderr
    assert secret not in again.stdout + again.stderr

    given = "s" * 16 + secrets.token_hex(16)
    env_secret = _env(tmp_path, LIVESALE_SECRET=given)
    out = run_cli(["token", "--host", "bob"], env_secret)
    assert out.returncode == 0, out.stderr
    assert "secret: LIVESALE_SECRET" in out.stderr
    assert given not in out.stdout + out.stderr
    assert jwt.decode(out.stdout.strip(), given, algorithms=["HS256"])["sub"] == "bob"


@pytest.mark.parametrize("ttl", ["-5", "0", str(366 * 86400 + 1)])
def test_token_refuses_a_bad_ttl(ttl: str, tmp_path: Path) -> None:
    env = _env(tmp_path, LIVESALE_SECRET="x" * 40)
    out = run_cli(["token", "--host", "alice", "--ttl", ttl], env)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stdout == ""
    assert "--ttl" in out.stderr and "between 1 and 31622400" in out.stderr, out.stderr


def test_token_ttl_is_honoured(tmp_path: Path) -> None:
    env = _env(tmp_path, LIVESALE_SECRET="x" * 40)
    out = run_cli(["token", "--viewer", "Ana", "--ttl", "60"], env)
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), "x" * 40, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 60


def _pyproject_version() -> str:
    m = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert m
    return m.group(1)


def test_version_flag(tmp_path: Path) -> None:
    out = run_cli(["--version"], _env(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"livesale {_pyproject_version()}"


def test_version_falls_back_to_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from server import cli

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert cli.package_version() == _pyproject_version()


def test_client_doc_promises_no_cors_configuration() -> None:
    # there is none: OPTIONS answers 405
    assert "CORS configuration" not in (ROOT / "docs" / "CLIENT.md").read_text()


# -- item 10: documented limits and tables -------------------------------------------------------

def test_readme_states_every_enforced_setting_limit() -> None:
    from server.config import ENV_ALLOWED

    readme = (ROOT / "README.md").read_text().splitlines()
    assert ENV_ALLOWED["LIVESALE_SECRET"] == "at least 32 characters"
    assert ENV_ALLOWED["LIVESALE_HOLD_TTL_S"] == "5 to 86,400"
    for env, allowed in ENV_ALLOWED.items():
        rows = [ln for ln in readme if ln.startswith(f"| `{env}` |")]
        assert len(rows) == 1, env
        assert allowed in rows[0], (env, allowed, rows[0])


def test_protocol_doc_states_token_exp_and_description_limit() -> None:
    from commerce.identity import TokenError, verify_token

    secret = "y" * 40
    no_exp = jwt.encode({"sub": "alice", "role": "viewer"}, secret, algorithm="HS256")
    with pytest.raises(TokenError):
        verify_token(secret, no_exp)
    protocol = (ROOT / "docs" / "PROTOCOL.md").read_text()
    identity = protocol.split("## Identity", 1)[1].split("\n## ", 1)[0]
    assert "without `exp`" in identity
    row = next(ln for ln in protocol.splitlines() if ln.startswith("| `POST /api/rooms/{room}/products`"))
    assert "2,000" in row


def test_database_doc_lists_every_table_and_column() -> None:
    from inventory.store import metadata

    doc = (ROOT / "docs" / "DATABASE.md").read_text()
    assert "docs/DATABASE.md" in (ROOT / "README.md").read_text()
    for table in metadata.sorted_tables:
        section = doc.split(f"### `{table.name}`", 1)
        assert len(section) == 2, f"table {table.name} is not documented"
        body = section[1].split("\n### ", 1)[0]
        for column in table.columns:
            assert f"| `{column.name}` |" in body, f"{table.name}.{column.name}"
