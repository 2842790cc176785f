"""A connection the cluster client closed under a command fails inside redis-py with a RuntimeError or an
AttributeError (not a ConnectionError): the error tree answers it as the retryable UNAVAILABLE, and only
when it was raised inside redis-py (an AttributeError of our own stays a bug: INTERNAL)."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection

from commerce.errors import ErrorCode, as_error


async def test_an_error_from_inside_redis_py_connection_code_is_unavailable() -> None:
    conn = Connection()  # never connected: its writer is None, as after redis-py closed it under a command
    with pytest.raises((AttributeError, RuntimeError)) as caught:
        await conn._send_packed_command([b"*1\r\n$4\r\nPING\r\n"])
    err = as_error(caught.value)
    assert err is not None and err.code is ErrorCode.UNAVAILABLE


def test_our_own_attribute_error_stays_internal() -> None:
    with pytest.raises(AttributeError) as caught:
        None.writelines  # type: ignore[attr-defined]  # noqa: B018
    assert as_error(caught.value) is None
    assert as_error(RuntimeError("no traceback")) is None
