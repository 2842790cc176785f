"""Chat and moderation: comments, likes, announcements, hiding comments, muting users."""

from __future__ import annotations

import secrets
import time
from typing import Any

from . import events as ev
from .errors import Muted
from .identity import Identity
from .room_bus import RoomBus

__all__ = ["Chat"]


class Chat:
    def __init__(self, bus: RoomBus) -> None:
        self.bus = bus

    async def comment(self, viewer: Identity, room_id: str, text: str, muted: bool = False,
                      team: str | None = None) -> dict[str, Any]:
        """``muted``: the gateway's view of the room says the host muted this viewer; ``team``: the
        commenter's fan team (the comment carries it, the page shows its badge)."""
        if muted:
            raise Muted("the host muted you in this room")
        c: dict[str, Any] = {"id": "c-" + secrets.token_hex(5), "user": viewer.user, "name": viewer.name, "text": text,
                             "ts": int(time.time() * 1000)}
        if team:
            c["team"] = team
        await self.bus.comment(room_id, c)
        return c

    async def like(self, room_id: str, n: int) -> int:
        return await self.bus.add_likes(room_id, n)

    async def announce(self, room_id: str, text: str) -> None:
        await self.bus.publish(room_id, ev.announcement(text),
                               {"announcement": {"text": text, "ts": int(time.time() * 1000)}})

    async def hide_comment(self, room_id: str, comment_id: str) -> None:
        await self.bus.publish(room_id, ev.comment_hidden(comment_id), {f"hidden:{comment_id}": 1})

    async def mute(self, room_id: str, user: str) -> None:
        await self.bus.publish(room_id, ev.user_muted(user), {f"muted:{user}": 1})
