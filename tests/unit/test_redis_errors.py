"""Redis failures reach the application as ``Unavailable``, whatever the client raises."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from flashorder.adapters._redis.errors import translated
from flashorder.domain import errors


def test_a_redis_error_is_unavailable() -> None:
    with pytest.raises(errors.Unavailable), translated():
        raise RedisConnectionError("Error 111 connecting to 10.77.0.129:7000.")


def test_a_write_to_a_transport_the_loop_closed_is_unavailable_not_a_500() -> None:
    # What the cluster client raised after a master failover (seen in the failover test).
    closed = "unable to perform operation on <TCPTransport closed=True>; the handler is closed"
    with pytest.raises(errors.Unavailable) as caught, translated():
        raise RuntimeError(closed)
    assert "connection lost" in str(caught.value)


def test_another_runtime_error_is_not_taken_for_a_lost_connection() -> None:
    with pytest.raises(RuntimeError, match="coroutine"), translated():
        raise RuntimeError("coroutine ignored GeneratorExit")
