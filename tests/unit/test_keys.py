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


def test_each_drop_poll_draw_and_teams_script_keys_share_one_hash_tag() -> None:
    """Cluster-ready (issue "Interaction", item 5): every interaction script touches the keys of one
    drop, poll, draw or room only, so each family must sit under one hash tag."""
    def tags(*keys: str) -> set[str]:
        return {k[k.index("{"):k.index("}") + 1] for k in keys}

    d, p, w, t = K.drop_keys("d-1"), K.poll_keys("p-1"), K.draw_keys("w-1"), K.team_keys("r-1")
    assert tags(d.meta, d.claims, d.applying) == {"{drop:d-1}"}
    assert tags(p.meta, p.votes, p.counts) == {"{poll:p-1}"}
    assert tags(w.meta, w.entrants, w.present) == {"{draw:w-1}"}
    assert tags(t.members, t.stats, t.present, K.room_keys("r-1").state) == {"{room:r-1}"}
    assert tags(K.wallet_key("v-1")) == {"{user:v-1}"}  # written beside a claim, never inside its script
