"""The shelf's ordering rule (commerce/shelf.py ``shelf_order``, docs/PROTOCOL.md Each viewer their own
shelf): own score, then team score, then the host's order; pure."""

from __future__ import annotations

from hypothesis import given, strategies as st

from commerce.shelf import WEIGHTS, is_personal, shelf_order

HOST = ["p0", "p1", "p2", "p3"]


def test_nothing_scored_keeps_the_hosts_order() -> None:
    assert shelf_order(HOST, {}, {}) == HOST
    assert not is_personal(HOST, {}, {})
    assert not is_personal(HOST, {"p0": 0}, {"p1": 0})


def test_own_score_first_then_the_hosts_order() -> None:
    own = {"p3": WEIGHTS["tap"] + WEIGHTS["held"], "p2": WEIGHTS["saved"]}
    assert shelf_order(HOST, own, {}) == ["p3", "p2", "p0", "p1"]
    assert is_personal(HOST, own, {})


def test_team_score_orders_what_the_viewer_did_not_score() -> None:
    assert shelf_order(HOST, {}, {"p1": 2, "p3": 9}) == ["p3", "p1", "p0", "p2"]
    # own beats team; among equal own scores the team decides; then the host
    assert shelf_order(HOST, {"p2": 1, "p0": 1}, {"p0": 4, "p3": 50}) == ["p0", "p2", "p3", "p1"]


def test_a_product_bought_already_goes_below_the_unscored_ones() -> None:
    own = {"p0": WEIGHTS["tap"] + WEIGHTS["held"] + WEIGHTS["paid"], "p2": WEIGHTS["viewed"]}
    assert own["p0"] < 0
    assert shelf_order(HOST, own, {}) == ["p2", "p1", "p3", "p0"]
    assert is_personal(HOST, own, {})


def test_scores_of_products_not_on_the_shelf_are_ignored_and_duplicates_kept_once() -> None:
    assert shelf_order(["b", "a", "b"], {"zz": 100}, {"yy": 5}) == ["b", "a"]
    assert not is_personal(["b", "a"], {"zz": 100}, {"yy": 5})


scores = st.dictionaries(st.sampled_from(HOST + ["x"]), st.integers(-50, 50), max_size=5)


@given(own=scores, team=scores, host=st.permutations(HOST))
def test_the_rule_holds_for_any_scores(own: dict[str, int], team: dict[str, int], host: list[str]) -> None:
    out = shelf_order(host, own, team)
    assert sorted(out) == sorted(host)  # a permutation of the shelf
    for a, b in zip(out, out[1:]):  # each neighbour pair respects (own desc, team desc, host order)
        ka = (-own.get(a, 0), -team.get(a, 0), host.index(a))
        kb = (-own.get(b, 0), -team.get(b, 0), host.index(b))
        assert ka < kb
