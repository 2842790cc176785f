"""`livesale demo`: the whole system on embedded defaults, with a seeded live room that looks alive.

It runs the gateway + settlement in this process, seeds a room with products and fan teams over the
public HTTP API, launches a flash sale about every minute (with a poll or a coupon drop in between),
and runs a few simulated viewers (the Python client package, ``livesale_client.aio``, over the public
WebSocket protocol) who join a team, chat, like, vote, claim coupons, buy and pay: through the sandbox
payment provider it starts
(``server/sandbox_pay.py``, on LIVESALE_SANDBOX_PORT or a free port), pressing Pay on its hosted page,
with a claimed coupon when they hold one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable
from typing import Any

import aiohttp
from aiohttp import web

from commerce.identity import mint_host_token
from commerce.tasks import OwnedTasks
from livesale_client import LiveSaleError, SaleOpen, Snapshot, aio

from .cli import run_server
from .config import Settings
from .payment_setup import start_bundled_sandbox

__all__ = ["run_demo"]

log = logging.getLogger(__name__)

ROOM = "demo"
PRODUCTS: list[dict[str, Any]] = [
    {"product_id": "lipstick", "sku": "LS-RED-01", "title": "Velvet Matte Lipstick, Ruby", "unit_price": 1990,
     "description": "Long-wear matte finish. 12 shades."},
    {"product_id": "serum", "sku": "SR-VITC-30", "title": "Vitamin C Glow Serum 30 ml", "unit_price": 3450,
     "description": "15% vitamin C, brightening."},
    {"product_id": "sneakers", "sku": "SN-CLOUD-42", "title": "Cloud Runner Sneakers", "unit_price": 8900,
     "description": "Featherweight knit, limited colourway."},
    {"product_id": "headphones", "sku": "HP-NC-700", "title": "Noise-cancelling Headphones", "unit_price": 12900,
     "description": "30 h battery, USB-C."},
]
NAMES = ["Ana", "Bruno", "Chen", "Dara", "Emeka", "Fatima", "Gus", "Hana", "Ines", "Jae", "Kofi", "Lena"]
TEAMS = [{"team_id": "ruby", "name": "Team Ruby", "colour": "#c0392b", "badge": "R"},
         {"team_id": "jade", "name": "Team Jade", "colour": "#16a085", "badge": "J"},
         {"team_id": "gold", "name": "Team Gold", "colour": "#d4ac0d", "badge": "G"}]
POLLS = [("Which colour should we drop next?", ["Ruby", "Coral", "Nude", "Plum"]),
         ("Sneakers or headphones next?", ["Sneakers", "Headphones"])]
LINES = ["love this!", "is it vegan?", "how long does shipping take?", "just bought one 🎉", "more colours please",
         "that price 🔥", "ready for the drop", "does it come in blue?", "hi from Lisbon", "3, 2, 1..."]


async def run_demo(settings: Settings) -> None:
    if settings.port == 0:
        settings = settings.replace(port=8080)
    sandbox_runner, settings = await _start_sandbox(settings)  # payments go through its pay page
    settings = settings.replace(guest_tokens=True)  # the demo's viewers (and the page) use guest tokens
    stop = asyncio.Event()
    tasks = OwnedTasks(log, "demo task")

    async def ready(url: str) -> None:
        host_token = mint_host_token(settings.signing_secret(), "demo-host", (ROOM,))
        base = url.replace("0.0.0.0", "127.0.0.1")
        await _seed(base, host_token)
        tasks.spawn(_sales_loop(base, host_token, stop))
        link: asyncio.Future[str] = asyncio.get_running_loop().create_future()  # the first viewer's share code
        for i in range(settings.demo_viewers):
            tasks.spawn(_viewer(base, NAMES[i % len(NAMES)], stop, link, sharer=i == 0, referred=i % 2 == 1))
        print("\n  livesale demo is running\n"
              f"  viewer page : {base}/rooms/{ROOM}\n"
              f"  host panel  : {base}/host/{ROOM}#token={host_token}\n"
              f"  API         : {base}/api/rooms/{ROOM}\n"
              f"  payments    : sandbox provider at {settings.sandbox_url} (no real money)\n"
              "  Ctrl-C stops it.\n", flush=True)

    try:
        await run_server(settings, ready=ready)
    finally:
        stop.set()
        await tasks.cancel(5.0)
        await sandbox_runner.cleanup()


async def _start_sandbox(settings: Settings) -> tuple[web.AppRunner, Settings]:
    """The bundled sandbox payment provider (server/payment_setup.py), its webhooks aimed at this
    gateway; the settings switched to LIVESALE_PAYMENT_MODE=sandbox whatever the environment says."""
    return await start_bundled_sandbox(settings.replace(payment_mode="sandbox", sandbox_url=""), settings.port)


async def _seed(base: str, token: str) -> None:
    h = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=h) as s:
        async with s.post(f"{base}/api/rooms", json={"room_id": ROOM, "title": "Friday Night Drop"}) as r:
            r.raise_for_status()
        for p in PRODUCTS:
            async with s.post(f"{base}/api/rooms/{ROOM}/products", json={**p, "currency": "EUR"}) as r:
                r.raise_for_status()
        async with s.post(f"{base}/api/rooms/{ROOM}/actions/set_teams", json={"teams": TEAMS,
                                                                              "switch_cooldown_s": 120}) as r:
            r.raise_for_status()
        async with s.post(f"{base}/api/rooms/{ROOM}/actions/go_live", json={}) as r:
            r.raise_for_status()


async def _sales_loop(base: str, token: str, stop: asyncio.Event) -> None:
    """Pin a product, announce, and drop a flash sale about every minute; between two sales a poll or
    a drop of a few coupons (5 EUR off, any sale of the room)."""
    h = {"Authorization": f"Bearer {token}"}
    n = 0
    async with aiohttp.ClientSession(headers=h) as s:
        while not stop.is_set():
            p = PRODUCTS[n % len(PRODUCTS)]
            n += 1
            try:
                await s.post(f"{base}/api/rooms/{ROOM}/actions/pin", json={"product": p["product_id"]})
                await s.post(f"{base}/api/rooms/{ROOM}/actions/announce",
                             json={"text": f"Flash sale on {p['title']} in 15 seconds!"})
                await s.post(f"{base}/api/rooms/{ROOM}/sales", json={
                    "product_id": p["product_id"], "units": random.choice([10, 20, 30]), "per_user_limit": 2,
                    "unit_price": int(p["unit_price"] * 0.7), "starts_in_s": 15, "duration_s": 40,
                    "hold_ttl_s": 60})
            except aiohttp.ClientError as exc:
                log.warning("demo sale loop: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 30)
            try:
                if n % 2:
                    question, options = POLLS[(n // 2) % len(POLLS)]
                    await s.post(f"{base}/api/rooms/{ROOM}/actions/open_poll",
                                 json={"question": question, "options": options, "duration_s": 25})
                else:
                    await s.post(f"{base}/api/rooms/{ROOM}/actions/drop_coupons",
                                 json={"count": 5, "kind": "amount", "value": 500, "claim_s": 25, "valid_s": 600})
            except aiohttp.ClientError as exc:
                log.warning("demo interaction loop: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 30)


async def _viewer(base: str, name: str, stop: asyncio.Event, link: asyncio.Future[str], *, sharer: bool = False,
                  referred: bool = False) -> None:
    """A simulated viewer: joins a team, watches, chats, likes, votes, claims coupons, and taps buy when a
    sale opens (pays most holds, with a claimed coupon when it holds one). The ``sharer`` creates a share
    link of the room; ``referred`` viewers join through it, so the sharer earns commissions."""
    rng = random.Random(name)
    coupons: list[str] = []  # drop ids of the coupons this viewer claimed and has not used
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/api/viewer-token", json={"name": name}) as r:
            token = (await r.json())["token"]
        ref = None
        if sharer:
            async with s.post(f"{base}/api/share-links", json={"room_id": ROOM},
                              headers={"Authorization": f"Bearer {token}"}) as r:
                if r.status == 201 and not link.done():
                    link.set_result((await r.json())["code"])
        elif referred:
            with contextlib.suppress(TimeoutError):
                ref = await asyncio.wait_for(asyncio.shield(link), 30)
        def client() -> aio.LiveSaleClient:
            return aio.LiveSaleClient(base, room=ROOM, token=token, join_fields={"ref": ref} if ref else None,
                                      max_queue=1000)

        live = client()
        try:
            while not stop.is_set():  # the client reconnects and resumes by itself; this retries a first join
                try:
                    await live.start()
                    break
                except LiveSaleError as exc:
                    log.debug("demo viewer %s: %s", name, exc)
                    live = client()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 2)
            if stop.is_set():
                return
            acts = OwnedTasks(log, f"demo viewer {name}")
            acts.spawn(_chatter(live, rng))
            acts.spawn(_watch(live, s, rng, coupons, acts))
            try:
                await stop.wait()
            finally:
                await acts.cancel(5.0)
        finally:
            await live.close()


async def _watch(live: aio.LiveSaleClient, s: aiohttp.ClientSession, rng: random.Random, coupons: list[str],
                 acts: OwnedTasks) -> None:
    """React to the room's typed events: a team at the first snapshot, votes, coupon claims, a tap on buy
    when a sale opens (each tap its own task, owned by ``acts``)."""
    async for ev in live.events():
        if isinstance(ev, Snapshot) and ev.raw.get("teams") and not (ev.you or {}).get("team"):
            team = rng.choice(ev.raw["teams"]["teams"])["team_id"]
            acts.spawn(_quiet(live.request("join_team", {"team": team})))
        elif ev.raw.get("type") == "poll_opened" and rng.random() < 0.9:
            poll = ev.raw["poll"]
            acts.spawn(_quiet(live.request("vote", {"poll": poll["poll_id"],
                                                    "option": rng.randrange(len(poll["options"]))}),
                              rng.uniform(0.5, 8)))
        elif ev.raw.get("type") == "coupon_drop" and rng.random() < 0.7:
            acts.spawn(_claim(live, ev.raw["drop"]["drop_id"], coupons, rng))
        elif isinstance(ev, SaleOpen) and rng.random() < 0.8:
            acts.spawn(_buy(live, s, ev.sale["sale_id"], coupons, rng))


async def _quiet(call: Awaitable[Any], delay: float = 0.0) -> None:
    await asyncio.sleep(delay)
    try:
        await call
    except LiveSaleError as exc:
        log.debug("demo viewer: %s", exc)


async def _claim(live: aio.LiveSaleClient, drop: str, coupons: list[str], rng: random.Random) -> None:
    await asyncio.sleep(rng.uniform(0.05, 2))
    try:
        res = await live.request("claim_coupon", {"drop": drop})
    except LiveSaleError as exc:
        log.debug("demo claim: %s", exc)
        return
    if res.raw.get("code") == "CLAIMED":
        coupons.append(drop)


async def _buy(live: aio.LiveSaleClient, s: aiohttp.ClientSession, sale: str, coupons: list[str],
               rng: random.Random) -> None:
    """Tap buy a moment after the open; pay most holds through the sandbox provider's page."""
    await asyncio.sleep(rng.uniform(0.05, 1.5))
    try:
        res = await live.buy(sale)
        if not res.reserved or not res.hold or rng.random() >= 0.75:
            return
        await asyncio.sleep(rng.uniform(1, 6))
        started = await live.checkout(res.hold, coupon=coupons.pop(0) if coupons else None)
    except LiveSaleError as exc:
        log.debug("demo buy: %s", exc)
        return
    if started.redirect_url:
        await asyncio.sleep(rng.uniform(0.5, 3))  # reading the hosted page
        await _pay_on_page(s, started.redirect_url, "pay" if rng.random() < 0.9 else "cancel")


async def _pay_on_page(s: aiohttp.ClientSession, redirect_url: str, action: str) -> None:
    """What the buyer does on the sandbox provider's hosted page: press Pay (or Cancel)."""
    try:
        async with s.post(redirect_url, data={"action": action}, headers={"Accept": "application/json"}) as r:
            await r.read()
    except aiohttp.ClientError as exc:
        log.debug("demo payment page: %s", exc)


async def _chatter(live: aio.LiveSaleClient, rng: random.Random) -> None:
    while True:
        await asyncio.sleep(rng.uniform(3, 12))
        if rng.random() < 0.5:
            await live.comment(rng.choice(LINES))
        await live.like(rng.randint(1, 5))
        if rng.random() < 0.3:  # opened a product's details: an interest signal
            await live.send("view", product=rng.choice(PRODUCTS)["product_id"])
