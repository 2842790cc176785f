"""The built wheel is complete: installed into a fresh virtualenv (no editable install, no source
tree on the path), `livesale serve` starts from it and serves a room over HTTP and WebSocket.

Every Lua script and web asset must be package data; an editable install hides a missing one.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import aiohttp
import pytest

from conftest import timeout

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300, method="thread")]


def _source_files(pattern: str) -> set[str]:
    return {str(p.relative_to(ROOT)) for p in ROOT.glob(pattern) if ".venv" not in p.parts}


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding only the wheel; the dependencies come from the test's own
    site-packages through a .pth line (a path line: the editable install's finder is not loaded)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy: setuptools builds in the source tree (build/, *.egg-info)
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "node_modules", "test-output", ".livesale", "__pycache__", "results"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                          "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True,
                         timeout=timeout(180))
    assert out.returncode == 0, out.stderr
    wheel = next((tmp / "dist").glob("livesale-*.whl"))
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "livesale_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q",
                          str(wheel)], capture_output=True, text=True, timeout=timeout(120))
    assert out.returncode == 0, out.stderr
    return env_dir


def test_wheel_holds_every_lua_script_and_web_asset(wheel_venv: Path) -> None:
    py = wheel_venv / "bin" / "python"
    code = ("import json, importlib.util, pathlib\n"
            "out = {}\n"
            "for pkg in ('server', 'stream_gateway', 'inventory', 'commerce'):\n"
            "    spec = importlib.util.find_spec(pkg)\n"
            "    if spec is None: continue\n"
            "    base = pathlib.Path(spec.origin).parent\n"
            "    out[pkg] = (str(base), sorted(str(p.relative_to(base.parent)) for p in base.rglob('*')"
            " if p.suffix in ('.lua', '.js', '.css', '.html', '.svg', '.png', '.ico')))\n"
            "print(json.dumps(out))")
    got = json.loads(subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=True,
                                    cwd=wheel_venv).stdout)
    for pkg, (where, _) in got.items():
        assert str(wheel_venv) in where, f"{pkg} imported from {where}, not from the wheel"
    installed = {f for _, files in got.values() for f in files}
    wanted = set()
    for pattern in ("*/lua/*.lua", "*/web/**/*"):
        wanted |= {f for f in _source_files(pattern) if Path(f).suffix in (".lua", ".js", ".css", ".html",
                                                                           ".svg", ".png", ".ico")}
    assert wanted, "no Lua or web files found in the source tree"
    assert wanted <= installed, f"missing from the wheel: {sorted(wanted - installed)}"
    # every Python package (a folder with __init__.py) of the five, subpackages included
    packages = {str(p.parent.relative_to(ROOT)).replace("/", ".") for pkg in ("server", "stream_gateway", "commerce",
                                                                        "inventory", "livesale_client")
                for p in (ROOT / pkg).rglob("__init__.py")}
    code = "import importlib.util, sys; print([n for n in sys.argv[1:] if importlib.util.find_spec(n) is None])"
    missing = subprocess.run([str(py), "-c", code, *sorted(packages)], capture_output=True, text=True, check=True,
                             cwd=wheel_venv).stdout.strip()
    assert missing == "[]", f"packages missing from the wheel: {missing}"


async def test_livesale_serve_runs_from_the_wheel(wheel_venv: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "PYTHONPATH")}
    env.update(LIVESALE_DATA_DIR=str(tmp_path / "data"), LIVESALE_PORT="0", LIVESALE_SECRET="s" * 40,
               LIVESALE_LOG_LEVEL="WARNING")
    exe = wheel_venv / "bin" / "livesale"
    token = subprocess.run([str(exe), "token", "--host", "pkg-host"], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=timeout(60))
    assert token.returncode == 0, token.stderr
    host_token = token.stdout.strip().splitlines()[-1]
    proc = await asyncio.create_subprocess_exec(str(exe), "serve", env=env, cwd=tmp_path,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        url = None
        assert proc.stdout is not None
        while url is None:
            line = (await asyncio.wait_for(proc.stdout.readline(), timeout(60))).decode()
            assert line, "livesale serve exited before listening"
            m = re.search(r"listening on (http://\S+)", line)
            url = m.group(1) if m else None
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {host_token}"}
            async with http.post(f"{url}/api/rooms", json={"room_id": "pkg", "title": "From the wheel"},
                                 headers=headers) as r:
                assert r.status == 201, await r.text()  # publishing the room event runs a Lua script
            async with http.get(f"{url}/rooms/pkg") as r:
                assert r.status == 200 and "<html" in (await r.text()).lower()
            async with http.get(f"{url}/static/livesale.js") as r:
                assert r.status == 200
            async with http.ws_connect(f"{url}/ws") as ws:
                hello = await ws.receive_json(timeout=timeout(10))
                assert hello["type"] == "hello"
                await ws.send_json({"type": "join", "room": "pkg"})
                snap = await ws.receive_json(timeout=timeout(10))
                assert snap["type"] == "snapshot" and snap["room"]["title"] == "From the wheel"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout(30))
            except TimeoutError:
                proc.kill()
                await proc.wait()
