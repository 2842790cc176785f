"""The interaction features' Lua scripts (commerce/lua/*.lua), registered on a Redis client once."""

from __future__ import annotations

import importlib.resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

__all__ = ["script"]


def script(redis: Redis, name: str) -> AsyncScript:
    """``commerce/lua/<name>.lua`` as a script object (EVALSHA, loaded again after a SCRIPT FLUSH)."""
    return redis.register_script((importlib.resources.files("commerce") / "lua" / f"{name}.lua").read_text())
