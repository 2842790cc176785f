"""The checkable part of a lucky draw (docs/DRAWS.md): the seed and its commitment, the entrants'
masked ids, the entrant list's hash and the ranking that picks the winners and the redraws. Pure.

``verify_draw`` (the standalone checker viewers run) implements the same procedure again from
docs/DRAWS.md alone, on purpose: the unit tests hold both to the documented test vector.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence

__all__ = ["SEED_BYTES", "new_seed", "new_mask_key", "commitment", "entry_id", "list_hash", "rank", "ranking",
           "winners", "next_entrants"]

SEED_BYTES = 32


def new_seed() -> bytes:
    """The draw's secret seed: committed to (``commitment``) before entries open, revealed at the draw."""
    return secrets.token_bytes(SEED_BYTES)


def new_mask_key() -> bytes:
    """The per-draw key of the entrants' masked ids: never published."""
    return secrets.token_bytes(SEED_BYTES)


def commitment(seed: bytes) -> str:
    """Hex SHA-256 of the seed's bytes."""
    return hashlib.sha256(seed).hexdigest()


def entry_id(mask_key: bytes, user_id: str) -> str:
    """A viewer's masked id in one draw: "e-" + the first 16 hex characters of HMAC-SHA256(mask key,
    user id): stable within the draw, unlinkable across draws without the key."""
    return "e-" + hmac.new(mask_key, user_id.encode(), hashlib.sha256).hexdigest()[:16]


def list_hash(entries: Sequence[str]) -> str:
    """Hex SHA-256 of the sorted entry ids joined by newlines (an empty list hashes b"")."""
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


def rank(seed: bytes, list_hash_hex: str, entry: str) -> str:
    """Hex SHA-256(seed || list hash bytes || entry id): the smaller, the earlier the entrant is drawn."""
    return hashlib.sha256(seed + bytes.fromhex(list_hash_hex) + entry.encode()).hexdigest()


def ranking(seed: bytes, entries: Iterable[str]) -> list[str]:
    """Every entrant in drawing order: by (rank, entry id) ascending, over the list's own hash."""
    listed = sorted(set(entries))
    h = list_hash(listed)
    return sorted(listed, key=lambda e: (rank(seed, h, e), e))


def winners(seed: bytes, entries: Iterable[str], k: int) -> list[str]:
    """The first ``k`` of the ranking (all of them when there are fewer entrants)."""
    return ranking(seed, entries)[:max(0, k)]


def next_entrants(order: Sequence[str], already: Iterable[str], count: int) -> list[str]:
    """A redraw: the next ``count`` entrants in the ranking ``order`` who have not won yet."""
    won = set(already)
    return [e for e in order if e not in won][:max(0, count)]
