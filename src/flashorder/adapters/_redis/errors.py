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
    except RuntimeError as exc:
        # After a failover the cluster client may write to a connection whose transport the
        # event loop already closed; redis-py lets the loop's RuntimeError through as it is.
        # It is a lost connection like any other, not a bug of the request.
        if not _closed_transport(exc):
            raise
        raise errors.Unavailable("redis", f"connection lost: {exc}") from exc


def _closed_transport(exc: RuntimeError) -> bool:
    message = str(exc)
    return "handler is closed" in message or "transport" in message.lower()


def text(value: object) -> str:
    """A Redis reply as text: bytes decoded, anything else as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)
