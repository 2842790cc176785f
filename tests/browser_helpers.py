"""Shared pieces of the browser tests: the Chromium lookup (skip or fail without it), the
`livesale serve` subprocess (`LiveServer` and the module-scoped `live` fixture), page and room helpers.

Test modules import what they use (`from browser_helpers import live, ...`); importing this module
skips the importing module when Chromium or Playwright is missing (a failure with
LIVESALE_REQUIRE_BROWSER=1).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from conftest import timeout

# The same lookup as the Makefile's `browser` target: chromium or chromium-browser on PATH, else Debian's path.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
# CI sets LIVESALE_REQUIRE_BROWSER=1: a missing browser is then a failure, never a silent skip.
REQUIRE_BROWSER = os.environ.get("LIVESALE_REQUIRE_BROWSER", "") == "1"
# Screenshots always go to test-output/; LIVESALE_UPDATE_SCREENSHOTS=1 also refreshes the tracked docs/screenshots/.
UPDATE_DOC_SHOTS = os.environ.get("LIVESALE_UPDATE_SCREENSHOTS", "") == "1"


def _missing(reason: str) -> NoReturn:
    if REQUIRE_BROWSER:
        pytest.fail(f"LIVESALE_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
    _missing("no Chromium found (looked for chromium and chromium-browser on PATH, then /usr/bin/chromium); "
             "install Debian's chromium with `make browser`")
try:
    import playwright.async_api as playwright_api
except ImportError:
    _missing("the playwright package is not installed (`pip install -e '.[test]'`)")
async_playwright = playwright_api.async_playwright
expect = playwright_api.expect

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-output" / "screenshots"
DOC_SHOTS = ROOT / "docs" / "screenshots"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PRICE = 4999  # EUR minor units


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """`livesale serve` in a subprocess; restartable on the same port (for the reconnect test)."""

    env: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    host_token: str = ""
    room: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve"], cwd=ROOT, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout(30)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base}/api/time", timeout=1) as r:
                    if "server_time" in json.loads(r.read()):
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)  # polling a subprocess's port, not waiting on the page
        raise RuntimeError(f"server did not answer /api/time in time:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout(20))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def api(self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None,
            anonymous: bool = False) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if not anonymous and (token or self.host_token):
            req.add_header("Authorization", f"Bearer {token or self.host_token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path} -> {e.code} {e.read()[:500]!r}") from None


def _mint_host_token(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-m", "server.cli", "token", "--host", "h1"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def live(redis_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory,
         request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    """The module's server. Payments: the default mode (`sandbox`, the bundled provider `livesale serve`
    starts itself: the page's Pay opens its hosted page); a module whose tests are not about paying and
    rely on `pay` confirming at once sets ``LIVE_PAYMENT_MODE = "instant"``."""
    data = tmp_path_factory.mktemp("browser-server")
    env = {**os.environ, "LIVESALE_PORT": str(_free_port()), "LIVESALE_DATA_DIR": str(data),
           "LIVESALE_SECRET": "browser-test-" + secrets.token_hex(16), "REDIS_URL": redis_url,
           "DATABASE_URL": database_url, "LIVESALE_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
           "LIVESALE_GUEST_TOKENS": "1", "LIVESALE_GUEST_TOKEN_RATE": "100000"}  # the pages' viewers are guests
    for name in ("LIVESALE_PAYMENT_MODE", "LIVESALE_SANDBOX_URL", "LIVESALE_PAYMENT_WEBHOOK_SECRET"):
        env.pop(name, None)
    mode = getattr(request.module, "LIVE_PAYMENT_MODE", "")
    if mode:
        env["LIVESALE_PAYMENT_MODE"] = mode
    server = LiveServer(env=env, port=int(env["LIVESALE_PORT"]), log_path=data / "server.log")
    server.start()
    try:
        server.host_token = _mint_host_token(env)
        server.room = "b" + secrets.token_hex(5)
        server.api("POST", "/api/rooms", {"room_id": server.room, "title": "Friday Night Drop"})
        server.api("POST", f"/api/rooms/{server.room}/products",
                   {"product_id": "p-earbuds", "sku": "AUR-EB-01", "title": "Aurora Wireless Earbuds",
                    "unit_price": PRICE, "currency": "EUR", "description": "Noise-cancelling, 30 h battery"})
        server.api("POST", f"/api/rooms/{server.room}/products",
                   {"product_id": "p-hoodie", "sku": "CK-HD-02", "title": "Cloud Knit Hoodie",
                    "unit_price": 6900, "currency": "EUR"})
        server.api("POST", f"/api/rooms/{server.room}/actions/pin", {"product": "p-earbuds"})
        server.api("POST", f"/api/rooms/{server.room}/actions/go_live", {})
        yield server
    except BaseException:
        print(server.log_tail(), file=sys.stderr)
        raise
    finally:
        server.stop()


async def _open(browser: Any, url: str, viewport: dict[str, int], errors: list[str], **ctx: Any) -> Any:
    context = await browser.new_context(viewport=viewport, **ctx)
    page = await context.new_page()
    page.on("pageerror", lambda e: errors.append(f"{url}: {e}"))
    page.on("console", lambda m: errors.append(f"{url}: console.{m.type}: {m.text}") if m.type == "error" else None)
    await page.goto(url)
    return page


async def pay_on_sandbox_page(viewer: Any, price: int = PRICE) -> None:
    """Tap the viewer page's Pay in the sandbox mode: the provider's hosted page opens in a new
    window; press its Pay and wait for its confirmation (the order then reaches the page by webhook)."""
    async with viewer.context.expect_page(timeout=ms(15)) as popup_info:
        await viewer.get_by_test_id("pay-button").click()
    pay_page = await popup_info.value
    await pay_page.wait_for_url(re.compile(r"/pay/pay_"), timeout=ms(15))
    await expect(pay_page.locator("#amount")).to_have_text(f"{price // 100}.{price % 100:02d} EUR")
    await pay_page.locator("#pay").click()
    await expect(pay_page.locator("#note")).to_contain_text("Payment received", timeout=ms(15))
    await pay_page.close()


def pay_via_sandbox_http(live: LiveServer, hold: str, token: str) -> dict[str, Any]:
    """Pay a viewer's hold through the sandbox provider over HTTP, as the page and the buyer would:
    start the checkout (``POST /api/holds/{hold}/checkout``: ``payment_started``'s fields), then press
    Pay on the provider's hosted page (``POST`` its ``redirect_url`` with ``action=pay``). The sandbox
    sends its signed webhook to the server before it answers; the webhook must have confirmed the hold.
    Returns the checkout's fields plus ``order_id`` (the webhook's answer); the order is settled (and
    ``order_confirmed`` sent) shortly after, so wait for that effect."""
    started: dict[str, Any] = live.api("POST", f"/api/holds/{hold}/checkout", {}, token=token)
    assert started.get("hold") == hold and started.get("provider") == "sandbox", started
    assert str(started.get("redirect_url", "")).startswith("http"), started
    req = urllib.request.Request(started["redirect_url"], data=urllib.parse.urlencode({"action": "pay"}).encode(),
                                 method="POST")
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    req.add_header("Accept", "application/json")  # the sandbox answers its page's form with JSON then
    try:
        with urllib.request.urlopen(req, timeout=timeout(30)) as r:
            paid = json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise AssertionError(f"POST {started['redirect_url']} -> {e.code} {e.read()[:500]!r}") from None
    assert paid.get("status") == "succeeded", paid
    webhook = paid.get("webhook") or {}
    assert webhook.get("status") == 200, f"the sandbox's webhook was not accepted: {paid}"
    outcome = json.loads(webhook["answer"])
    assert outcome.get("outcome") == "confirmed" and outcome.get("order_id"), outcome
    return {**started, "order_id": outcome["order_id"]}


def _shot(name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS / name


def ms(seconds: float) -> float:
    """A scaled timeout in milliseconds (what Playwright wants)."""
    return timeout(seconds) * 1000


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A Chromium browser for one test, closed afterwards."""
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def new_room(live: LiveServer, title: str = "Defect room", products: list[dict[str, Any]] | None = None,
             pin: str | None = None, go_live: bool = True) -> str:
    """A fresh room on the test server (own id), with products, optionally pinned and live."""
    room = "r" + secrets.token_hex(5)
    live.api("POST", "/api/rooms", {"room_id": room, "title": title})
    for prod in products if products is not None else [
            {"product_id": "p-earbuds", "sku": "AUR-EB-01", "title": "Aurora Wireless Earbuds",
             "unit_price": PRICE, "currency": "EUR"}]:
        live.api("POST", f"/api/rooms/{room}/products", prod)
    if pin:
        live.api("POST", f"/api/rooms/{room}/actions/pin", {"product": pin})
    if go_live:
        live.api("POST", f"/api/rooms/{room}/actions/go_live", {})
    return room


def launch_sale(live: LiveServer, room: str, product: str, units: int = 10, **fields: Any) -> dict[str, Any]:
    """POST /api/rooms/{room}/sales (starts_in_s 0, duration_s 120 unless given); returns the Sale."""
    body = {"product_id": product, "units": units, "starts_in_s": 0, "duration_s": 120, **fields}
    sale: dict[str, Any] = live.api("POST", f"/api/rooms/{room}/sales", body)
    return sale


def viewer_token(live: LiveServer, name: str = "Tester") -> tuple[str, str]:
    """A demo viewer token (POST /api/viewer-token): (token, user)."""
    out = live.api("POST", "/api/viewer-token", {"name": name}, anonymous=True)
    return out["token"], out["user"]


async def post_comments(live: LiveServer, room: str, texts: list[str], per_socket: int = 3) -> None:
    """Post comments over the WebSocket, `per_socket` per viewer connection (the comment rate's burst),
    in order: each batch is sent after the previous socket's comments were sent."""
    import aiohttp  # the server's own dependency

    async with aiohttp.ClientSession() as session:
        for i in range(0, len(texts), per_socket):
            token, _ = viewer_token(live, f"Chatter {i // per_socket}")
            async with session.ws_connect(f"{live.base}/ws", protocols=("livesale.v1.json",)) as ws:
                await ws.send_json({"type": "join", "room": room, "token": token})
                while True:  # hello, then the snapshot
                    msg = await asyncio.wait_for(ws.receive_json(), timeout(10))
                    if msg["type"] == "snapshot":
                        break
                    assert msg["type"] == "hello", msg
                for text in texts[i:i + per_socket]:
                    await ws.send_json({"type": "comment", "text": text})
                # a ping's pong comes after the comments were handled (one reader per socket)
                await ws.send_json({"type": "ping"})
                while True:
                    msg = await asyncio.wait_for(ws.receive_json(), timeout(10))
                    assert msg["type"] != "error", msg
                    if msg["type"] == "pong":
                        break
