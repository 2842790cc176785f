"""Every Redis key livesale uses, built in one place.

All keys of one sale share the hash tag ``{sale:<id>}`` so every script runs on
Redis Cluster unchanged. Global keys (not touched by scripts) carry no tag.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SaleKeys", "sale_keys", "OUTBOX_REGISTRY", "DEAD_LETTER", "SETTLE_GROUP", "SALES_REGISTRY"]

PREFIX = "ls"
OUTBOX_REGISTRY = f"{PREFIX}:outboxes"   # SET of outbox stream keys the settlement worker reads
SALES_REGISTRY = f"{PREFIX}:sales"       # SET of armed sale ids (for the reaper)
DEAD_LETTER = f"{PREFIX}:dead-letter"    # STREAM of settlement entries that kept failing
SETTLE_GROUP = "settle"


@dataclass(frozen=True, slots=True)
class SaleKeys:
    sale_id: str
    sale: str
    buyers: str
    holds: str
    idem: str
    deadlines: str
    outbox: str

    @property
    def for_reserve(self) -> list[str]:
        return [self.sale, self.buyers, self.holds, self.idem, self.deadlines]

    @property
    def for_confirm(self) -> list[str]:
        return [self.sale, self.buyers, self.holds, self.deadlines, self.outbox]

    @property
    def for_release(self) -> list[str]:
        return [self.sale, self.buyers, self.holds, self.deadlines]

    @property
    def all(self) -> list[str]:
        return [self.sale, self.buyers, self.holds, self.idem, self.deadlines, self.outbox]


def sale_keys(sale_id: str) -> SaleKeys:
    tag = f"{PREFIX}:{{sale:{sale_id}}}"
    return SaleKeys(
        sale_id=sale_id,
        sale=f"{tag}:sale",
        buyers=f"{tag}:buyers",
        holds=f"{tag}:holds",
        idem=f"{tag}:idem",
        deadlines=f"{tag}:deadlines",
        outbox=f"{tag}:outbox",
    )


def sale_id_of_outbox(stream_key: str) -> str:
    start = stream_key.index("{sale:") + len("{sale:")
    return stream_key[start:stream_key.index("}", start)]

