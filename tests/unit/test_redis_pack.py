"""inventory/redis_pack.py: hiredis packs every command byte for byte as redis-py's own asyncio packer does,
and what hiredis refuses goes to redis-py's packer (which packs it or raises its usual DataError)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from inventory.redis_link import connect
from inventory.redis_pack import HiredisPacking, packed

PLAIN = Connection()
FAST = packed(Connection)()

arg = st.one_of(st.text(), st.binary(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
                st.floats(allow_nan=False), st.binary(min_size=7000, max_size=9000))


def wire(conn: Any, *args: Any) -> bytes:
    return b"".join(conn.pack_command(*args))


@given(st.sampled_from(["SET", "EVALSHA", "CONFIG GET", b"CLIENT KILL", b"ZADD"]), st.lists(arg, max_size=20))
def test_same_bytes_as_redis_py(name: Any, args: list[Any]) -> None:
    assert wire(FAST, name, *args) == wire(PLAIN, name, *args)


def test_a_reserve_batch_is_packed_by_hiredis_in_one_piece() -> None:
    args = ["EVALSHA", "a" * 40, 5, *"kkkkk", 50, ""] + [f"h{i}" for i in range(800)]
    assert len(FAST.pack_command(*args)) == 1
    assert wire(FAST, *args) == wire(PLAIN, *args)


@pytest.mark.parametrize("bad", [True, None, object()])
def test_refused_types_get_redis_pys_error(bad: Any) -> None:
    with pytest.raises(DataError):
        FAST.pack_command("SET", "k", bad)


def test_a_memoryview_goes_to_redis_pys_packer() -> None:
    assert wire(FAST, "SET", "k", memoryview(b"abc")) == wire(PLAIN, "SET", "k", b"abc")


def test_one_class_per_connection_kind() -> None:
    for cls in (Connection, SSLConnection, UnixDomainSocketConnection):
        assert packed(cls) is packed(cls) and issubclass(packed(cls), cls) and issubclass(packed(cls), HiredisPacking)
        assert packed(packed(cls)) is packed(cls)


async def test_the_servers_clients_pack_with_hiredis() -> None:
    """No server needed: the clients make their connections lazily."""
    one = connect("redis://127.0.0.1:1/0", cluster=False, decode=True)
    unix = connect("unix:///tmp/none.sock", cluster=False, decode=False)
    many = connect("redis://127.0.0.1:1", cluster=True, decode=True)
    try:
        assert issubclass(one.connection_pool.connection_class, HiredisPacking)
        assert issubclass(unix.connection_pool.connection_class, UnixDomainSocketConnection)
        assert issubclass(unix.connection_pool.connection_class, HiredisPacking)
        nm = many.nodes_manager  # type: ignore[attr-defined]
        assert issubclass(nm.connection_kwargs["connection_class"], HiredisPacking)
        assert all(issubclass(n.connection_class, HiredisPacking) for n in nm.startup_nodes.values())
    finally:
        await one.aclose()
        await unix.aclose()
        await many.aclose()
