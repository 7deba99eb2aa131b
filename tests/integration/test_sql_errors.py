"""What the real driver raises, as the ports see it: a database that cannot be reached is
``Unavailable`` (a 503), a statement that does not fit the schema is a bug (a 500)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy import exc as sa_exc

from flashorder.adapters.sql.engine import make_engine
from flashorder.adapters.sql.errors import unavailable_on_failure
from flashorder.domain import errors
from flashorder_bench.stack import free_port


async def test_a_column_the_schema_lacks_is_a_bug_not_an_outage(mariadb_database: str) -> None:
    engine = make_engine(mariadb_database, pool_size=1)
    try:
        with pytest.raises(sa_exc.DBAPIError) as raised:
            with unavailable_on_failure():
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT no_such_column FROM products"))
        # asyncmy raises this one as an OperationalError, the class of lost connections.
        assert isinstance(raised.value, sa_exc.OperationalError)
        assert not isinstance(raised.value, errors.Unavailable)

        with pytest.raises(sa_exc.DBAPIError) as raised:
            with unavailable_on_failure():
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1 FROM no_such_table"))
        assert not isinstance(raised.value, errors.Unavailable)
    finally:
        await engine.dispose()


async def test_a_server_nobody_listens_for_is_unavailable(mariadb_database: str) -> None:
    url = mariadb_database.replace("127.0.0.1:3306", f"127.0.0.1:{free_port()}")
    assert url != mariadb_database
    engine = make_engine(url, pool_size=1)
    try:
        with pytest.raises(errors.Unavailable):
            with unavailable_on_failure():
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
