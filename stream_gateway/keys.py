"""Redis keys of live rooms. All keys of one room share the hash tag ``{room:<id>}``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RoomKeys", "room_keys", "GATEWAYS"]

GATEWAYS = "ls:gateways"  # HASH gateway id -> last heartbeat ms (for viewer counts)


@dataclass(frozen=True, slots=True)
class RoomKeys:
    room_id: str
    channel: str    # pub/sub channel: E<event json> | A<ambient json> | U<user-targeted json>
    meta: str       # HASH seq, epoch
    log: str        # LIST of the last N sequenced events (replay for resume)
    state: str      # HASH field -> json (room, pinned, product:<id>, sale:<id>, hidden:<id>, muted:<id>)
    once: str       # SET of dedup names (sale open/close published once across gateways)
    comments: str   # LIST of recent comments, newest first
    likes: str      # STRING counter
    viewers: str    # HASH gateway id -> "count:ms"
    funnel: str     # HASH tapped / reserved / paid counters (dashboard)

    @property
    def for_publish(self) -> list[str]:
        return [self.meta, self.log, self.state, self.once]


def room_keys(room_id: str) -> RoomKeys:
    tag = f"ls:room:{{room:{room_id}}}"
    return RoomKeys(room_id=room_id, channel=f"{tag}:ch", meta=f"{tag}:meta", log=f"{tag}:log",
                    state=f"{tag}:state", once=f"{tag}:once", comments=f"{tag}:comments",
                    likes=f"{tag}:likes", viewers=f"{tag}:viewers", funnel=f"{tag}:funnel")
