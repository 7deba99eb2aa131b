"""The MariaDB pool pings a connection only after an idle spell (``PING_AFTER_IDLE_SECONDS``).

Each test cuts a pooled connection from the server's side (``KILL``) while it sits in the
pool, then checks it out again: after the idle spell the ping finds it dead and the pool
hands out a new one; within the spell no ping is sent, so the statement meets the dead link,
and the pool replaces it for the next transaction.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from flashorder.adapters.sql.engine import make_engine


async def connection_id(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT CONNECTION_ID()"))).scalar_one())


async def kill(url: str, victim: int) -> None:
    other = make_engine(url, pool_size=1)
    try:
        async with other.connect() as conn:
            await conn.execute(text(f"KILL {victim}"))
    finally:
        await other.dispose()


async def test_a_connection_idle_past_the_spell_is_pinged_and_replaced(
    mariadb_database: str,
) -> None:
    engine = make_engine(mariadb_database, pool_size=1, ping_after_idle=0.2)
    try:
        first = await connection_id(engine)
        await kill(mariadb_database, first)
        await asyncio.sleep(0.4)

        # No error: the ping found the connection dead, and the pool opened another.
        assert await connection_id(engine) != first
    finally:
        await engine.dispose()


async def test_a_connection_used_within_the_spell_is_not_pinged(mariadb_database: str) -> None:
    engine = make_engine(mariadb_database, pool_size=1, ping_after_idle=60)
    try:
        first = await connection_id(engine)
        await kill(mariadb_database, first)

        # Checked out again at once: no ping, so the statement itself meets the cut link.
        with pytest.raises(sa_exc.OperationalError):
            await connection_id(engine)
        # The error invalidated it: the next transaction gets a new connection.
        assert await connection_id(engine) != first
    finally:
        await engine.dispose()
