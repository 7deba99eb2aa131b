"""Schema migrations without an ``alembic.ini``: the configuration is built in code.

``migrate`` runs Alembic, whose environment calls ``asyncio.run``: call it from sync code
(the CLI, a test fixture, a deploy step), before or outside any running event loop.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

#: Shipped inside the package (the wheel includes every file under ``src/flashorder``).
MIGRATIONS = Path(__file__).with_name("migrations")

_DATABASE_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


def alembic_config(database_url: str) -> Config:
    """An Alembic configuration for ``database_url``, for ``alembic.command`` functions."""
    cfg = Config()
    # configparser interpolates "%": escape it in the one path we put there.
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    # Passed as an attribute, not an option: a password may hold any character.
    cfg.attributes["database_url"] = database_url
    return cfg


def migrate(database_url: str) -> None:
    """Bring the database at ``database_url`` up to the newest schema. Sync code only."""
    command.upgrade(alembic_config(database_url), "head")


def database_url(server_url: str, name: str) -> str:
    """``server_url`` (no database) with the database ``name`` filled in."""
    url = make_url(server_url).set(database=_checked(name))
    return url.render_as_string(hide_password=False)


def create_database_if_missing(server_url: str, name: str) -> None:
    """Create the MariaDB database ``name`` (utf8mb4, binary collation) unless it exists.

    A no-op for SQLite, whose file appears on first connect. Sync code only.
    """
    url = make_url(server_url)
    if url.get_backend_name() == "sqlite":
        return
    statement = (
        f"CREATE DATABASE IF NOT EXISTS `{_checked(name)}` "
        "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    )
    asyncio.run(_execute(url, statement))


def drop_database(server_url: str, name: str) -> None:
    """Drop the MariaDB database ``name`` if it exists (tests clean up with it)."""
    url = make_url(server_url)
    if url.get_backend_name() == "sqlite":
        return
    asyncio.run(_execute(url, f"DROP DATABASE IF EXISTS `{_checked(name)}`"))


def _checked(name: str) -> str:
    # The name goes into DDL, which takes no bind parameters: allow only a plain identifier.
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name


async def _execute(server: URL, statement: str) -> None:
    engine = create_async_engine(
        server.set(database=None), poolclass=NullPool, connect_args={"connect_timeout": 5}
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()
