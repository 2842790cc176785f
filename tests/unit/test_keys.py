"""One key layout: the load generators' own copy (they never import the server) matches the key module."""

from __future__ import annotations

from inventory import keys as K
from loadtest import engine, memory


def test_loadtest_copy_of_the_sale_layout_matches_the_key_module() -> None:
    assert engine.KEYS == K.sale_keys(engine.SALE).for_reserve


def test_keys_of_one_sale_and_one_room_share_a_hash_tag() -> None:
    def tag(key: str) -> str:
        return key[key.index("{"):key.index("}") + 1]

    assert {tag(k) for k in K.sale_keys("s-1").all} == {"{sale:s-1}"}
    room = K.room_keys("r-1")
    assert {tag(k) for k in (room.channel, room.meta, room.log, room.state, room.once, room.comments, room.likes,
                             room.viewers, room.funnel)} == {"{room:r-1}"}
    assert K.sale_id_of_outbox(K.sale_keys("s-9").outbox) == "s-9"


def test_memory_bench_copy_of_the_reconcile_lock_matches_the_key_module() -> None:
    assert memory.RECONCILE_LOCK == K.RECONCILE_LOCK
