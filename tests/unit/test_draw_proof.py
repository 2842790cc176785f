"""The draw procedure of docs/DRAWS.md: the server's implementation (commerce/draw_proof.py) and the
standalone checker (verify_draw) both give the documented test vector, and the checker refuses a
tampered list, seed, commitment, winner list or redraw. Pure: no Redis, SQL or sockets."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import verify_draw
from commerce import draw_proof as proof

ROOT = Path(__file__).resolve().parents[2]

# the test vector of docs/DRAWS.md ("Test vector"): keep the three in step
SEED = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
MASK_KEY = "ff" * 32
USERS = {"v-1": "e-e8a0b1cd8a994946", "v-2": "e-aaac336e65093c70", "v-3": "e-7f440105451a63ab",
         "v-4": "e-ed3bc9f24b0afbbd", "v-5": "e-e50c7f8a11dd172e", "v-6": "e-5fb6d8a5ffc7b11f",
         "v-7": "e-19cf89919065f5b2", "v-8": "e-f6796d988cabeb87"}
ENTRANTS = sorted(USERS.values())
COMMITMENT = "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd"
LIST_HASH = "7da172586bbf2bdfae3e1ca23638931f85f121509ea198007c1945ab892c03e8"
ORDER = ["e-5fb6d8a5ffc7b11f", "e-ed3bc9f24b0afbbd", "e-f6796d988cabeb87", "e-e50c7f8a11dd172e",
         "e-e8a0b1cd8a994946", "e-aaac336e65093c70", "e-19cf89919065f5b2", "e-7f440105451a63ab"]
FIRST_RANK = "0a23cf3e39a1d3cd35ad34c0d68cdf1339ab48a891211d91471ac5df52db6393"  # rank of e-5fb6d8a5ffc7b11f
K = 3
WINNERS = ORDER[:K]
REDRAWS = [{"round": 1, "replaced": ["e-ed3bc9f24b0afbbd"], "added": ["e-e50c7f8a11dd172e"]},
           {"round": 2, "replaced": ["e-e50c7f8a11dd172e"], "added": ["e-e8a0b1cd8a994946"]}]


def published() -> dict[str, Any]:
    """The vector as ``GET /api/draws/{draw}/entrants`` would serve it."""
    return {"draw_id": "w-vector", "commitment": COMMITMENT, "list_hash": LIST_HASH, "seed": SEED, "k": K,
            "entrants": list(ENTRANTS), "winner_ids": list(WINNERS), "redraws": copy.deepcopy(REDRAWS)}


# -- the server's implementation --------------------------------------------------------------------

def test_server_procedure_gives_the_documented_vector() -> None:
    seed = bytes.fromhex(SEED)
    mask = bytes.fromhex(MASK_KEY)
    assert {u: proof.entry_id(mask, u) for u in USERS} == USERS
    assert proof.commitment(seed) == COMMITMENT
    assert proof.list_hash(ENTRANTS) == LIST_HASH
    assert proof.list_hash(list(reversed(ENTRANTS))) == LIST_HASH  # sorted before hashing
    assert proof.rank(seed, LIST_HASH, ORDER[0]) == FIRST_RANK
    assert proof.ranking(seed, ENTRANTS) == ORDER
    assert proof.winners(seed, ENTRANTS, K) == WINNERS
    assert proof.winners(seed, ENTRANTS, 100) == ORDER  # k larger than the list: everyone
    assert proof.next_entrants(ORDER, WINNERS, 1) == ["e-e50c7f8a11dd172e"]
    assert proof.next_entrants(ORDER, [*WINNERS, "e-e50c7f8a11dd172e"], 1) == ["e-e8a0b1cd8a994946"]
    assert proof.next_entrants(ORDER, ORDER, 3) == []


def test_primitives_are_the_documented_formulas() -> None:
    seed = bytes.fromhex(SEED)
    assert proof.list_hash([]) == hashlib.sha256(b"").hexdigest()
    assert proof.ranking(seed, []) == []
    assert proof.commitment(seed) == hashlib.sha256(seed).hexdigest()
    e = ENTRANTS[0]
    assert proof.rank(seed, LIST_HASH, e) == hashlib.sha256(seed + bytes.fromhex(LIST_HASH) + e.encode()).hexdigest()
    fresh = proof.new_seed()
    assert len(fresh) == 32 and fresh != proof.new_seed() and len(proof.new_mask_key()) == 32
    assert proof.entry_id(b"k", "u").startswith("e-") and len(proof.entry_id(b"k", "u")) == 18


def test_the_list_hash_reshuffles_everyone() -> None:
    """Adding one entrant changes the list hash, hence every rank: the server cannot pick the list
    after knowing the seed without the ranking moving under it."""
    seed = bytes.fromhex(SEED)
    more = [*ENTRANTS, "e-0000000000000000"]
    h2 = proof.list_hash(more)
    assert h2 != LIST_HASH
    assert all(proof.rank(seed, LIST_HASH, e) != proof.rank(seed, h2, e) for e in ENTRANTS)


# -- the standalone checker ----------------------------------------------------------------------------

def test_checker_agrees_with_the_vector() -> None:
    report = verify_draw.verify(published())
    assert report.ok, report.text()
    assert "VERIFIED" in report.text()
    assert verify_draw.ranking(bytes.fromhex(SEED), ENTRANTS, LIST_HASH) == ORDER
    with_overrides = verify_draw.verify(published(), commitment=COMMITMENT, list_hash=LIST_HASH, seed=SEED,
                                        entry_id=USERS["v-3"])
    assert with_overrides.ok, with_overrides.text()


def test_checker_and_server_agree_on_random_draws() -> None:
    for n, k in ((0, 3), (1, 1), (5, 10), (50, 7), (300, 25)):
        seed, mask = proof.new_seed(), proof.new_mask_key()
        entries = sorted({proof.entry_id(mask, f"u{i}") for i in range(n)})
        order = proof.ranking(seed, entries)
        doc = {"draw_id": "w-r", "commitment": proof.commitment(seed), "list_hash": proof.list_hash(entries),
               "seed": seed.hex(), "k": k, "entrants": entries, "winner_ids": order[:k], "redraws": []}
        if n > k + 2:
            doc["redraws"] = [{"round": 1, "replaced": order[:2], "added": proof.next_entrants(order, order[:k], 2)}]
        assert verify_draw.ranking(seed, entries, doc["list_hash"]) == order
        report = verify_draw.verify(doc)
        assert report.ok, report.text()


def _tampered(change: Any) -> dict[str, Any]:
    doc = published()
    change(doc)
    return doc


@pytest.mark.parametrize("what, change", [
    ("an entrant left out", lambda d: d["entrants"].remove("e-19cf89919065f5b2")),
    ("an entrant added", lambda d: (d["entrants"].append("e-ffffffffffffffff"), d["entrants"].sort())),
    ("an entrant renamed", lambda d: d["entrants"].__setitem__(0, "e-19cf89919065f5b3")),
    ("the list unsorted", lambda d: d["entrants"].reverse()),
    ("another seed", lambda d: d.__setitem__("seed", "11" * 32)),
    ("another commitment", lambda d: d.__setitem__("commitment", hashlib.sha256(b"x").hexdigest())),
    ("another list hash", lambda d: d.__setitem__("list_hash", hashlib.sha256(b"x").hexdigest())),
    ("another winner", lambda d: d["winner_ids"].__setitem__(2, "e-e50c7f8a11dd172e")),
    ("winners reordered", lambda d: d["winner_ids"].reverse()),
    ("a smaller k", lambda d: d.__setitem__("k", 2)),
    ("a redraw skipping an entrant", lambda d: d["redraws"][0].__setitem__("added", ["e-e8a0b1cd8a994946"])),
    ("a redraw replacing a non-winner", lambda d: d["redraws"][0].__setitem__("replaced", ["e-7f440105451a63ab"])),
    ("a redraw round missing", lambda d: d["redraws"].pop(0)),
    ("no seed", lambda d: d.pop("seed")),
    ("a seed that is not hex", lambda d: d.__setitem__("seed", "zz" * 32)),
])
def test_checker_refuses_tampering(what: str, change: Any) -> None:
    report = verify_draw.verify(_tampered(change))
    assert not report.ok, what
    assert "NOT VERIFIED" in report.text()


def test_checker_overrides_and_own_entry() -> None:
    assert not verify_draw.verify(published(), commitment="00" * 32).ok       # the commitment seen in draw_opened
    assert not verify_draw.verify(published(), list_hash="00" * 32).ok        # the hash seen in draw_result
    assert not verify_draw.verify(published(), seed="00" * 32).ok
    assert not verify_draw.verify(published(), entry_id="e-0123456789abcdef").ok  # my entry is missing
    assert not verify_draw.verify([1, 2]).ok


def test_command_line_exit_status(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(published()))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_tampered(lambda d: d["entrants"].pop())))
    run = [sys.executable, "-m", "verify_draw"]
    ok = subprocess.run([*run, str(good), "--commitment", COMMITMENT], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "VERIFIED" in ok.stdout and "NOT VERIFIED" not in ok.stdout
    no = subprocess.run([*run, str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert no.returncode == 1 and "NOT VERIFIED" in no.stdout and "FAIL" in no.stdout
    piped = subprocess.run([*run, "-"], cwd=ROOT, input=json.dumps(published()), capture_output=True, text=True)
    assert piped.returncode == 0, piped.stdout + piped.stderr
    missing = subprocess.run([*run, str(tmp_path / "nope.json")], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_the_document_carries_this_vector() -> None:
    """docs/DRAWS.md's test vector is the one asserted here (seed, ids, hashes, order, winners, redraws)."""
    text = (ROOT / "docs" / "DRAWS.md").read_text()
    vector = text[text.index("## Test vector"):]
    for value in (SEED, COMMITMENT, LIST_HASH, FIRST_RANK, *ENTRANTS):
        assert value in vector, value
    for user, e in USERS.items():
        assert f"`{user}` `{e}`" in vector, user
    rows = [line.split("`")[1] for line in vector.splitlines() if line.startswith("| ") and "`e-" in line]
    assert rows == ORDER
    seed = bytes.fromhex(SEED)
    for line in vector.splitlines():
        if line.startswith("| ") and "`e-" in line:
            e, rank = line.split("`")[1], line.split("`")[3]
            assert proof.rank(seed, LIST_HASH, e) == rank, e
    assert "With k = 3 the winners are " + ", ".join(f"`{e}`" for e in WINNERS) in " ".join(vector.split())
    for rd in REDRAWS:
        assert f"replaced: [\"{rd['replaced'][0]}\"]" in " ".join(vector.split()).replace("[ ", "[")
