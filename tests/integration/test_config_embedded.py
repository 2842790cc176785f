"""Settings validation and the embedded engine's lifecycle (real valkey-server processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_sync

from server.config import ENV_DOCS, Settings, SettingsError
from server.embedded import EmbeddedRedis


def test_defaults_and_env_parsing(tmp_path: Path) -> None:
    s = Settings.from_env({})
    assert s.port == 8080 and s.redis_url == "" and s.settle_in_process is True
    s = Settings.from_env({"LIVESALE_PORT": "9000", "LIVESALE_SETTLE_IN_PROCESS": "off",
                           "REDIS_URL": "redis://127.0.0.1:6379/2", "LIVESALE_DATA_DIR": str(tmp_path)})
    assert (s.port, s.settle_in_process, s.redis_url) == (9000, False, "redis://127.0.0.1:6379/2")
    assert s.sqlalchemy_url == f"sqlite+aiosqlite:///{tmp_path / 'livesale.db'}"
    assert Settings.from_env({"DATABASE_URL": "postgresql://u@h/db"}).sqlalchemy_url == "postgresql+asyncpg://u@h/db"


@pytest.mark.parametrize("env, needle", [
    ({"LIVESALE_PORT": "http"}, "LIVESALE_PORT='http': expected an integer"),
    ({"LIVESALE_PORT": "70000"}, "between 0 and 65535"),
    ({"REDIS_URL": "localhost:6379"}, "REDIS_URL: expected a URL"),
    ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL: expected a URL"),
    ({"LIVESALE_SETTLE_IN_PROCESS": "maybe"}, "expected true/false"),
    ({"LIVESALE_LOG_LEVEL": "LOUD"}, "LIVESALE_LOG_LEVEL"),
    ({"LIVESALE_WS_SOFT_LIMIT": "9000000"}, "SOFT_LIMIT must be lower"),
    ({"LIVESALE_HEARTBEAT_S": "nan?"}, "expected a number"),
])
def test_bad_settings_have_clear_messages(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert needle in str(err.value)


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for env, _default, _doc in ENV_DOCS:
        assert f"`{env}`" in readme, env


def test_cli_reports_bad_configuration(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "server.cli", "serve"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "LIVESALE_PORT": "abc", "LIVESALE_DATA_DIR": str(tmp_path)})
    assert out.returncode == 2
    assert "LIVESALE_PORT='abc': expected an integer" in out.stderr


def test_secret_is_generated_once_private_and_never_printed(tmp_path: Path) -> None:
    s = Settings.from_env({"LIVESALE_DATA_DIR": str(tmp_path)})
    first = s.signing_secret()
    assert first == s.signing_secret() and len(first) >= 32
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    assert first not in repr(s)


def test_embedded_server_config_and_persistence(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    try:
        r = redis_sync.Redis.from_url(url)
        cfg = {k: r.config_get(k)[k] for k in ("appendonly", "appendfsync", "maxmemory-policy", "port")}
        assert cfg == {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction", "port": "0"}
        r.set("k", "v")
        r.close()
    finally:
        server.stop()
    server = EmbeddedRedis(tmp_path)  # AOF brings the data back
    url = server.start()
    try:
        r = redis_sync.Redis.from_url(url)
        assert r.get("k") == b"v"
        r.close()
    finally:
        server.stop()


def test_leftover_from_a_crashed_run_never_blocks_the_next_start(tmp_path: Path) -> None:
    # a parent that starts the server and is then killed -9: its server dies with it (PDEATHSIG)
    code = ("import sys, time; from server.embedded import EmbeddedRedis; "
            f"s = EmbeddedRedis({str(tmp_path)!r}); print(s.start(), flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    assert parent.stdout.readline().startswith("unix://")
    pid = int((tmp_path / "valkey" / "valkey.pid").read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                break
        except OSError:
            break
        time.sleep(0.05)
    # stale files (pid file, socket) are still there: the next start must clean them up and work
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    try:
        assert redis_sync.Redis.from_url(url).ping()
    finally:
        server.stop()


def test_leftover_server_still_running_is_replaced(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    first.start()
    old_pid = int((tmp_path / "valkey" / "valkey.pid").read_text())
    second = EmbeddedRedis(tmp_path)  # e.g. a new run while an orphan still holds the socket
    try:
        url = second.start()
        assert redis_sync.Redis.from_url(url).ping()
        assert int((tmp_path / "valkey" / "valkey.pid").read_text()) != old_pid
    finally:
        second.stop()
        first.stop()
