"""The hosts' actions, one table for both transports: the WebSocket (`{"type": <action>, ...}`) and
HTTP (`POST /api/rooms/{room}/actions/{action}`). Each entry is the request's typed definition and
the function that carries it out; the transports check the host token before calling ``run``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .interaction_requests import ClosePoll, CreateDraw, DropCoupons, EndDrop, OpenPoll, SetTeams
from .requests import Announce, CreateSale, Empty, EndSale, HideComment, LaunchSale, Mute, Pin, TopUp, TopUpSale
from .validation import Schema

if TYPE_CHECKING:
    from .service import Commerce

__all__ = ["HostAction", "HOST_ACTIONS"]

Run = Callable[["Commerce", str, Any], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class HostAction:
    schema: Schema[Any]
    run: Run


async def _go_live(c: Commerce, room_id: str, _: Empty) -> None:
    await c.set_live(room_id, True)


async def _end_live(c: Commerce, room_id: str, _: Empty) -> None:
    await c.set_live(room_id, False)


async def _pin(c: Commerce, room_id: str, m: Pin) -> None:
    await c.catalogue.pin(room_id, m.product)


async def _unpin(c: Commerce, room_id: str, _: Empty) -> None:
    await c.catalogue.unpin(room_id)


async def _launch_sale(c: Commerce, room_id: str, m: LaunchSale) -> dict[str, Any]:
    sale = await c.sales.launch(room_id, CreateSale(
        product_id=m.product, units=m.units, sale_id=m.sale_id, unit_price=m.price, per_user_limit=m.limit,
        starts_in_s=m.starts_in_s, duration_s=m.duration_s, hold_ttl_s=m.hold_ttl_s,
        members_only=m.members_only, pool=m.pool, deposit=m.deposit, balance_in_s=m.balance_in_s,
        balance_window_s=m.balance_window_s, deposit_rule=m.deposit_rule, variants=m.variants))
    if m.variants is not None:  # a sale of several variants: {group, sales}
        return sale
    return {"sale": sale}


async def _topup_sale(c: Commerce, room_id: str, m: TopUpSale) -> dict[str, Any]:
    return {"topup": await c.pools.topup(room_id, m.sale, TopUp(units=m.units, request_id=m.request_id))}


async def _end_sale(c: Commerce, room_id: str, m: EndSale) -> None:
    await c.sales.end(room_id, m.sale)


async def _announce(c: Commerce, room_id: str, m: Announce) -> None:
    await c.chat.announce(room_id, m.text)


async def _hide_comment(c: Commerce, room_id: str, m: HideComment) -> None:
    await c.chat.hide_comment(room_id, m.comment)


async def _mute(c: Commerce, room_id: str, m: Mute) -> None:
    await c.chat.mute(room_id, m.user)


# -- interaction (docs/PROTOCOL.md Interaction) ----------------------------------------------------------

async def _set_teams(c: Commerce, room_id: str, m: SetTeams) -> dict[str, Any]:
    return await c.teams.define(room_id, m)


async def _open_poll(c: Commerce, room_id: str, m: OpenPoll) -> dict[str, Any]:
    return {"poll": await c.polls.open(room_id, m)}


async def _close_poll(c: Commerce, room_id: str, m: ClosePoll) -> dict[str, Any]:
    return {"poll": await c.polls.close(room_id, m.poll)}


async def _drop_coupons(c: Commerce, room_id: str, m: DropCoupons) -> dict[str, Any]:
    return {"drop": await c.coupons.drop(room_id, m)}


async def _end_drop(c: Commerce, room_id: str, m: EndDrop) -> dict[str, Any]:
    return {"drop": await c.coupons.end(room_id, m.drop)}


async def _create_draw(c: Commerce, room_id: str, m: CreateDraw) -> dict[str, Any]:
    return {"draw": await c.draws.create(room_id, m)}


def _entry(name: str, cls: type, run: Run) -> tuple[str, HostAction]:
    return name, HostAction(Schema(cls, name), run)


HOST_ACTIONS: Mapping[str, HostAction] = dict([
    _entry("go_live", Empty, _go_live),
    _entry("end_live", Empty, _end_live),
    _entry("pin", Pin, _pin),
    _entry("unpin", Empty, _unpin),
    _entry("launch_sale", LaunchSale, _launch_sale),
    _entry("end_sale", EndSale, _end_sale),
    _entry("topup_sale", TopUpSale, _topup_sale),
    _entry("announce", Announce, _announce),
    _entry("hide_comment", HideComment, _hide_comment),
    _entry("mute", Mute, _mute),
    _entry("set_teams", SetTeams, _set_teams),
    _entry("open_poll", OpenPoll, _open_poll),
    _entry("close_poll", ClosePoll, _close_poll),
    _entry("drop_coupons", DropCoupons, _drop_coupons),
    _entry("end_drop", EndDrop, _end_drop),
    _entry("create_draw", CreateDraw, _create_draw),
])
