"""Redis failures as the application sees them: ``Unavailable("redis", ...)``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisError

from flashorder.domain import errors


@contextmanager
def translated() -> Iterator[None]:
    """Raise any ``RedisError`` of the body as ``errors.Unavailable`` (a 503 to clients)."""
    try:
        yield
    except RedisError as exc:
        raise errors.Unavailable("redis", str(exc) or type(exc).__name__) from exc


def text(value: object) -> str:
    """A Redis reply as text: bytes decoded, anything else as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)
