"""The typed requests of share-to-earn (docs/PROTOCOL.md Share-to-earn), shared by the HTTP API."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from .requests import PoolId
from .validation import Check, Range, Slug, Text

__all__ = ["CreateLink", "CreateShop", "ShopItems", "OpenPool", "SetRate", "ShopId", "BPS_RULE"]

_POOL = re.compile(r"^(?!.*--)[A-Za-z0-9_-]{1,40}\Z")
BPS_RULE = "an integer from 0 to 10,000 (basis points: 500 = 5%)"
Bps = Annotated[int, Range(0, 10_000)]
ShopId = Annotated[str, Check(lambda v: _shop_id(v), "1-48 characters of [A-Za-z0-9_-]")]


def _shop_id(v: object) -> str:
    if not isinstance(v, str) or not re.match(r"^[A-Za-z0-9_-]{1,48}\Z", v):
        raise ValueError
    return v


def _pools(v: object) -> tuple[str, ...]:
    if not isinstance(v, list) or not 1 <= len(v) <= 100 or not all(isinstance(x, str) and _POOL.match(x) for x in v):
        raise ValueError
    if len(set(v)) != len(v):
        raise ValueError
    return tuple(v)


def _flag(v: object) -> bool:
    if v.__class__ is not bool:
        raise ValueError
    return bool(v)


Flag = Annotated[bool, Check(_flag, "true or false")]
Pools = Annotated[tuple[str, ...], Check(_pools, "a list of 1-100 distinct pool ids")]


@dataclass(frozen=True, slots=True)
class CreateLink:
    room_id: Slug
    product_id: Slug | None = None


@dataclass(frozen=True, slots=True)
class CreateShop:
    title: Annotated[str, Text(200)]
    pools: Pools
    shop_id: ShopId | None = None


@dataclass(frozen=True, slots=True)
class ShopItems:
    pools: Pools


@dataclass(frozen=True, slots=True)
class OpenPool:
    open: Flag = True
    commission_bps: Bps | None = None


@dataclass(frozen=True, slots=True)
class SetRate:
    commission_bps: Bps


_ = PoolId  # pool ids follow the pools' rule (commerce/requests.py PoolId)
