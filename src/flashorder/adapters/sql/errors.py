"""Driver exceptions, translated into the ports' errors.

    errors.Unavailable("database")      connection lost or refused, timeouts, a full pool
     └── SerializationFailure           deadlock victim or lock wait timeout: retry the work

A duplicate key stays a SQLAlchemy ``IntegrityError`` here; only the repository that knows
what the key means turns it into ``AlreadyExists`` (``is_duplicate_key``). Every other error
(a bad statement, a violated CHECK) is a bug and propagates as it is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from asyncmy import errors as asyncmy_errors
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from flashorder.domain import errors

# MariaDB error numbers (ER_DUP_ENTRY, ER_DUP_ENTRY_WITH_KEY_NAME, ER_LOCK_DEADLOCK,
# ER_LOCK_WAIT_TIMEOUT).
_MARIADB_DUPLICATE = frozenset({1062, 1586})
_MARIADB_RETRYABLE = frozenset({1213, 1205})
_SQLITE_DUPLICATE = frozenset({"SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"})
# The server cannot be reached, is going away or is full, as opposed to refusing us (bad
# credentials, an unknown database): too many connections, shutdown in progress, connection
# killed, can't connect (socket, TCP), server gone away, connection lost.
_MARIADB_UNREACHABLE = frozenset({1040, 1053, 1927, 2002, 2003, 2006, 2013})


class SerializationFailure(errors.Unavailable):
    """The database gave up this transaction to break a deadlock or a lock wait that took too
    long. Nothing of it was committed: the caller may run the whole unit of work again."""

    def __init__(self, detail: str = "transaction aborted by a lock conflict") -> None:
        super().__init__("database", detail)


def _mariadb_code(orig: Any) -> int | None:
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _sqlite_name(orig: Any) -> str:
    name = getattr(orig, "sqlite_errorname", "")
    return name if isinstance(name, str) else ""


def is_duplicate_key(exc: sa_exc.IntegrityError) -> bool:
    return (
        _mariadb_code(exc.orig) in _MARIADB_DUPLICATE or _sqlite_name(exc.orig) in _SQLITE_DUPLICATE
    )


def as_unavailable(exc: BaseException) -> errors.Unavailable | None:
    """The port error for a database failure, or None when ``exc`` is not one."""
    if isinstance(exc, errors.Unavailable):
        return exc
    if isinstance(exc, sa_exc.DBAPIError):
        orig = exc.orig
        if _mariadb_code(orig) in _MARIADB_RETRYABLE:
            return SerializationFailure(str(orig))
        if _sqlite_name(orig).startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            # The busy timeout ran out while another connection held the write lock.
            return SerializationFailure(str(orig))
        if exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        ):
            return errors.Unavailable("database", str(orig))
        return None
    if isinstance(exc, sa_exc.TimeoutError):
        return errors.Unavailable("database", "no free connection in the pool")
    if isinstance(exc, sa_exc.PendingRollbackError):
        # Raised only after an earlier statement of this transaction lost its connection.
        return errors.Unavailable("database", "the connection was lost mid-transaction")
    if isinstance(
        exc,
        asyncmy_errors.OperationalError
        | asyncmy_errors.InterfaceError
        | sqlite3.OperationalError
        | sqlite3.InterfaceError
        | OSError,  # includes ConnectionError and the builtin TimeoutError
    ):
        return errors.Unavailable("database", f"{type(exc).__name__}: {exc}")
    return None


def is_unreachable(exc: BaseException) -> bool:
    """``exc`` says the database server could not be reached (down, restarting, full): worth
    waiting out. A server that answers with a refusal is not."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    if _mariadb_code(orig) in _MARIADB_UNREACHABLE:
        return True
    return isinstance(orig, OSError)


@contextmanager
def unavailable_on_failure() -> Iterator[None]:
    """Re-raise database failures in the block as ``Unavailable``; everything else as it is."""
    try:
        yield
    except Exception as exc:
        failure = as_unavailable(exc)
        if failure is None or failure is exc:
            raise
        raise failure from exc


async def release(conn: AsyncConnection) -> None:
    """Roll back whatever is still open and return the connection to the pool.

    Never raises: it runs on the way out of a failure, which must not be masked. A connection
    that cannot even roll back is broken; it is dropped, and the server rolls back the
    transaction when it sees the link close.
    """
    try:
        await conn.close()
    except Exception:
        with suppress(Exception):
            await conn.invalidate()
        with suppress(Exception):
            await conn.close()
