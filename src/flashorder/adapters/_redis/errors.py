"""Redis failures as the application sees them: ``Unavailable("redis", ...)``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisClusterException, RedisError

from flashorder.domain import errors

#: What a Redis call raises when Redis, a node or the way to it fails. redis-py's cluster
#: client raises ``RedisClusterException``, which is not a ``RedisError``, when no node
#: answers its slot-map refresh or the slots are not all covered (a master down with no
#: replica promoted yet), and ``SlotNotCoveredError``, one of them.
FAILURES = (RedisError, RedisClusterException)


@contextmanager
def translated() -> Iterator[None]:
    """Raise any Redis failure of the body as ``errors.Unavailable`` (a 503 to clients).

    A connection that redis-py's cluster client closed under a command is a
    ``ConnectionError`` too: see ``_redis.cluster``."""
    try:
        yield
    except FAILURES as exc:
        raise errors.Unavailable("redis", str(exc) or type(exc).__name__) from exc


def text(value: object) -> str:
    """A Redis reply as text: bytes decoded, anything else as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)
