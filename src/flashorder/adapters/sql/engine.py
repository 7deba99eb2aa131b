"""The async engine for MariaDB (``mysql+asyncmy://``) or SQLite (``sqlite+aiosqlite:///``).

Engines are built only by ``make_engine``, inside the running loop, and disposed by whoever
built them.

SQLite runs every transaction as ``BEGIN IMMEDIATE`` unless the connection carries
``READ_ONLY``: a unit of work reads and then writes, and a deferred transaction that tries to
upgrade its read lock while another writer holds the database fails at once with "database
is locked" (the busy timeout cannot help an upgrade). Taking the write lock up front makes
concurrent writers queue on ``busy_timeout`` instead.

Within one process, every SQLite writer (units of work, the relay, the read model, the
projector's status) first queues on one ``asyncio.Lock`` per connection pool (``writing``).
SQLite's busy handler lets waiting connections poll with growing sleeps, in no order: a writer
that polls can lose every round to writers handed the lock directly, and starve past the busy
timeout. The queue serves them in turn; other processes (a CLI, a migration) still wait on the
busy timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, Pool, PoolProxiedConnection

from flashorder.adapters.sql.errors import SerializationFailure

#: Execution option: on SQLite, begin with a plain (deferred) ``BEGIN``, which takes no write
#: lock. For connections that only read (queries, probes); ignored by MariaDB.
READ_ONLY = "flashorder_read_only"

#: How long a statement may wait for a row lock (MariaDB) or the write lock (SQLite).
LOCK_WAIT_SECONDS = 10
#: MariaDB aborts any statement that runs longer (``max_statement_time``). Longer than the
#: lock wait, so that a lock wait times out as a lock wait (retryable).
STATEMENT_TIMEOUT_SECONDS = 30
CONNECT_TIMEOUT_SECONDS = 5
#: How long a request waits for a free pooled connection before the database is "unavailable".
POOL_TIMEOUT_SECONDS = 10

# Both engines use ``pool_reset_on_return=None``: every connection is given back through
# ``Connection.close()``, which rolls back a transaction still open by itself, so the pool's
# own ROLLBACK on return would only add a round trip after every commit.


#: A pooled MariaDB connection given back more recently than this is handed out again without
#: a ping; one idle for longer is pinged first, and replaced if the ping fails. (HikariCP's
#: ``aliveBypassWindowMs`` makes the same trade, at 500 ms by default.)
PING_AFTER_IDLE_SECONDS = 0.5


def make_engine(
    url: str, *, pool_size: int = 20, ping_after_idle: float = PING_AFTER_IDLE_SECONDS
) -> AsyncEngine:
    """Build the engine for ``url``; call inside the running loop and dispose it on shutdown."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, pool_size)
    if backend in ("mysql", "mariadb"):
        return _mariadb_engine(parsed, pool_size, ping_after_idle)
    raise ValueError(f"unsupported database: {parsed.render_as_string(hide_password=True)}")


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


# One queue per pool: engines derived with ``execution_options`` share their parent's pool.
_WRITER_QUEUES: WeakKeyDictionary[Pool, asyncio.Lock] = WeakKeyDictionary()


def writer_queue(engine: AsyncEngine) -> asyncio.Lock | None:
    """This process's queue of writers to ``engine``'s SQLite database; None on MariaDB."""
    if not is_sqlite(engine):
        return None
    pool = engine.sync_engine.pool
    queue = _WRITER_QUEUES.get(pool)
    if queue is None:
        queue = _WRITER_QUEUES[pool] = asyncio.Lock()
    return queue


async def wait_turn(queue: asyncio.Lock) -> None:
    """Acquire ``queue``; ``SerializationFailure`` (retryable: nothing was done yet) after
    ``LOCK_WAIT_SECONDS``."""
    try:
        async with asyncio.timeout(LOCK_WAIT_SECONDS):
            await queue.acquire()
    except TimeoutError:
        raise SerializationFailure("waited too long for the database's write lock") from None


@asynccontextmanager
async def writing(engine: AsyncEngine) -> AsyncIterator[None]:
    """Hold this process's turn to write ``engine``'s SQLite database; a no-op on MariaDB."""
    queue = writer_queue(engine)
    if queue is None:
        yield
        return
    await wait_turn(queue)
    try:
        yield
    finally:
        queue.release()


@asynccontextmanager
async def begin_writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """``engine.begin()`` in this process's turn to write (see ``writing``)."""
    async with writing(engine), engine.begin() as conn:
        yield conn


#: Prepared statements kept per MariaDB connection. The service runs a few dozen distinct
#: statements; lists of ids render one statement per length, hence the room.
STATEMENT_CACHE_SIZE = 256


def _mariadb_engine(url: URL, pool_size: int, ping_after_idle: float) -> AsyncEngine:
    # Timeouts are server-side (lock wait, statement time) plus the connect timeout. asyncmy's
    # client-side ``read_timeout`` is left off: it wraps every read in ``wait_for`` and cost
    # about 30% more client CPU per unit of work here. A link that dies silently is cut by the
    # caller's deadline instead (``asyncio.timeout`` around the request): a cancelled read
    # closes its connection, and the unit of work gives it back to the pool as broken.
    connect_args: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "init_command": (
            f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_SECONDS}, "
            f"max_statement_time = {STATEMENT_TIMEOUT_SECONDS}"
        ),
    }
    if "charset" not in url.query:
        connect_args["charset"] = "utf8mb4"
    if url.get_driver_name() == "asyncmy":
        # Statements with parameters run as server-side prepared statements, kept per
        # connection (least recently used out): values travel in binary, with no escaping,
        # and a batch insert goes out as one MariaDB bulk execution
        # (COM_STMT_BULK_EXECUTE). A 20-row outbox insert cost 0.6 ms of client CPU as
        # escaped text and 0.08 ms as a bulk execution (docs/benchmarks.md, second round).
        connect_args["stmt_cache_size"] = STATEMENT_CACHE_SIZE
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        # A burst may open a few more connections; beyond that, requests queue for
        # ``pool_timeout`` rather than pile more sessions onto the server.
        max_overflow=max(2, pool_size // 2),
        pool_timeout=POOL_TIMEOUT_SECONDS,
        # Pinged only after an idle spell (``_ping_when_idle``), not at every checkout.
        # Under the server's wait_timeout (8 h by default) and any proxy's idle cut-off.
        pool_recycle=1800,
        # Correctness rests on guarded single-row updates and unique keys, never on a
        # repeatable snapshot. READ COMMITTED takes no gap locks, so concurrent inserts of
        # different keys (orders, purchases, processed events) cannot deadlock on a gap.
        isolation_level="READ COMMITTED",
        pool_reset_on_return=None,
        connect_args=connect_args,
    )
    _ping_when_idle(engine, ping_after_idle)
    return engine


def _ping_when_idle(engine: AsyncEngine, idle: float) -> None:
    """Ping a pooled connection at checkout only if it sat in the pool for over ``idle`` s.

    A ping on every checkout (``pool_pre_ping``) is a round trip before each transaction: under
    a sale, once per group-commit batch, relay batch and projector batch, for connections that
    were in use a few milliseconds before (1.4 to 1.6% of an API worker's CPU,
    docs/benchmarks.md).
    A connection that died while in use is invalidated by the error it raised; one that dies
    in the pool mostly dies with its server, and a server that went away was away for longer
    than ``idle``, so its connections are pinged and replaced. The one case left, a
    connection cut within ``idle`` of its last use with the server up, costs the transaction
    that finds it a retryable error (a 503), and the pool drops every connection of that age.
    """

    def stamp(_dbapi: DBAPIConnection | None, record: ConnectionPoolEntry) -> None:
        # A new connection counts as just used: it needs no ping at its first checkout.
        record.info["returned_at"] = time.monotonic()

    def checked_out(
        dbapi: DBAPIConnection, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is not None and time.monotonic() - returned_at <= idle:
            return
        try:
            # The dialect's own ping (asyncmy's COM_PING); checkout runs in SQLAlchemy's
            # greenlet, so the driver's coroutine is awaited there.
            engine.dialect.do_ping(dbapi)
        except Exception as exc:
            # The pool closes this connection and checks out another (three tries).
            raise sa_exc.DisconnectionError(f"a pooled connection failed its ping: {exc}") from exc

    event.listen(engine.sync_engine, "connect", stamp)
    event.listen(engine.sync_engine, "checkin", stamp)
    event.listen(engine.sync_engine, "checkout", checked_out)


def _sqlite_engine(url: URL, pool_size: int) -> AsyncEngine:
    database = url.database
    in_memory = database in (None, "", ":memory:")
    if not in_memory and database is not None and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    pool_args: dict[str, Any] = (
        {}
        if in_memory
        else {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": POOL_TIMEOUT_SECONDS}
    )
    engine = create_async_engine(url, connect_args={"timeout": LOCK_WAIT_SECONDS}, **pool_args)
    event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # The driver's own transaction handling (legacy mode) would emit a deferred BEGIN before
    # DML; switch it off so that ``_sqlite_on_begin`` alone decides how a transaction starts.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # WAL: readers never block the writer, nor the writer readers.
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA busy_timeout = {LOCK_WAIT_SECONDS * 1000}")
        cursor.execute("PRAGMA foreign_keys = ON")
        # FULL: a committed order survives a power cut, as it does on MariaDB.
        cursor.execute("PRAGMA synchronous = FULL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    read_only = conn.get_execution_options().get(READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
