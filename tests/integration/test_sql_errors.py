"""What the real driver raises, as the ports see it: a database that cannot be reached is
``Unavailable`` (a 503), a statement that does not fit the schema is a bug (a 500)."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from flashorder.adapters.sql.engine import make_engine
from flashorder.adapters.sql.errors import unavailable_on_failure
from flashorder.domain import errors
from flashorder_bench.stack import free_port


async def run(url: str, statement: str) -> BaseException:
    """What running ``statement`` on ``url`` raises, as the adapters translate it."""
    engine = make_engine(url, pool_size=1)
    try:
        with unavailable_on_failure():
            async with engine.connect() as conn:
                await conn.execute(text(statement))
    except Exception as exc:
        return exc
    finally:
        await engine.dispose()
    raise AssertionError(f"{statement!r} raised nothing")


async def test_a_column_the_schema_lacks_is_a_bug_not_an_outage(mariadb_database: str) -> None:
    unknown_column = await run(mariadb_database, "SELECT no_such_column FROM products")
    # asyncmy raises this one as an OperationalError, the class of lost connections.
    assert isinstance(unknown_column, sa_exc.OperationalError)
    assert not isinstance(unknown_column, errors.Unavailable)

    no_table = await run(mariadb_database, "SELECT 1 FROM no_such_table")
    assert isinstance(no_table, sa_exc.DBAPIError)
    assert not isinstance(no_table, errors.Unavailable)


async def test_a_server_nobody_listens_for_is_unavailable(mariadb_database: str) -> None:
    url = mariadb_database.replace("127.0.0.1:3306", f"127.0.0.1:{free_port()}")
    assert url != mariadb_database

    assert isinstance(await run(url, "SELECT 1"), errors.Unavailable)


async def test_a_sound_statement_goes_through(mariadb_database: str) -> None:
    engine = make_engine(mariadb_database, pool_size=1)
    try:
        with unavailable_on_failure():
            async with engine.connect() as conn:
                assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()
