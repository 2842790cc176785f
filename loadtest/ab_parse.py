"""A/B of the buy message's validation: our compiled validators vs msgspec structs via msgspec.convert.

    python -m loadtest.ab_parse            # prints ns per message, median of 5 rounds each, interleaved

Both decode the frame with orjson first (the gateway decodes JSON with orjson and msgpack with
msgpack, then validates the object, so both encodings share one validation path). This compares
only the validation step's total cost per buy as the gateway runs it. The result decided which one
``commerce/validation.py`` uses; docs/BENCHMARKS.md records the numbers. (This imports the server's
protocol module on purpose: it measures a function, not the server over its public protocol.)
"""

from __future__ import annotations

import statistics
import timeit
from typing import Annotated, Any

import msgspec
import orjson

Slug = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Rid = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:@-]{1,128}$")]


class Buy(msgspec.Struct, tag_field="type", tag="buy"):
    rid: Rid
    sale: Slug
    qty: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1


class Pay(msgspec.Struct, tag_field="type", tag="pay"):
    rid: Rid
    hold: Rid


class Ping(msgspec.Struct, tag_field="type", tag="ping"):
    rid: Rid | None = None


def main(n: int = 100_000, rounds: int = 5) -> dict[str, float]:
    from stream_gateway.messages import parse_inbound

    union: Any = Buy | Pay | Ping
    text = '{"type":"buy","rid":"b-1a2b3c-17","sale":"s-9a8b7c6d5e","qty":1}'

    def ours() -> Any:
        return parse_inbound(text)

    def with_msgspec() -> Any:
        return msgspec.convert(orjson.loads(text), union)

    assert ours().body.qty == with_msgspec().qty == 1
    results: dict[str, list[float]] = {"ours (compiled validators)": [], "msgspec.convert": []}
    for _ in range(rounds):
        for name, fn in zip(results, (ours, with_msgspec), strict=True):
            results[name].append(timeit.timeit(fn, number=n) / n * 1e9)
    out = {name: statistics.median(v) for name, v in results.items()}
    for name, ns in out.items():
        print(f"{name:28s} {ns:8.0f} ns per buy message (orjson decode + validation)")
    return out


if __name__ == "__main__":
    main()
