"""The expirer process rides out database and Redis outages, at its start and while it runs.

Each test runs ``flashorder expirer`` as a process of its own and reaches the suite's MariaDB
or Redis through a link that it cuts and opens again (``tests.support.link``), so the real
servers go on serving the rest of the suite. The process must stay alive through the outage
(a worker that exits is one a supervisor must restart, and the fault drills count it as a
failure) and expire the orders due once the server is back.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url

from flashorder.adapters.sql.engine import make_engine
from flashorder.adapters.sql.migrate import (
    alembic_config,
    create_database_if_missing,
    database_url,
    drop_database,
    migrate,
)
from flashorder.adapters.sql.uow import SqlUnitOfWorkFactory
from flashorder.adapters.stock.redis import RedisStockGate
from flashorder.application.ports import ReservationLine
from flashorder.domain.model import Order, OrderLine, PaymentType, ProductId, UserId
from flashorder_bench.stack import free_port, redis_url_with_db
from tests.support.link import Link
from tests.support.sql import new_order_id, new_product, now

pytestmark = pytest.mark.services

EXE = str(Path(sys.executable).with_name("flashorder"))
#: A Redis database of this module's own on the suite's server.
REDIS_DB = 12


@pytest.fixture
def bare_database(mariadb_url: str) -> Iterator[str]:
    """A new, empty MariaDB database (no schema: the expirer migrates it)."""
    name = f"flashorder_outage_{uuid.uuid4().hex[:12]}"
    create_database_if_missing(mariadb_url, name)
    try:
        yield database_url(mariadb_url, name)
    finally:
        drop_database(mariadb_url, name)


def through(url: str, port: int) -> str:
    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def link_to(url: str) -> Link:
    parsed = make_url(url)
    return Link(free_port(), parsed.host or "127.0.0.1", parsed.port or 3306)


@contextmanager
def expirer(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``flashorder expirer`` with these settings, stopped (SIGTERM) on the way out."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLASHORDER_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [EXE, "expirer"],
            env={**clean, "FLASHORDER_EXPIRE_EVERY_SECONDS": "0.2", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def until(
    what: str,
    check: Callable[[], Awaitable[bool]],
    *,
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout: float = 90,
) -> None:
    """Wait for ``check`` while the expirer lives. Generous: the process imports and starts
    slowly on a loaded machine."""
    deadline = time.monotonic() + timeout
    while not await check():
        alive(proc, log)
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def logged(log: Path, event: str, *, after: int = 0) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        text = await asyncio.to_thread(log.read_bytes)
        return text[after:].count(event.encode()) >= 2

    return check


def alive(proc: subprocess.Popen[bytes], log: Path) -> None:
    assert proc.poll() is None, f"expirer exited with {proc.returncode}:\n{log.read_text()}"


async def due_order(url: str, *, units: int = 1) -> tuple[Order, ProductId]:
    """A product and an order of it whose payment deadline has passed, as the API leaves
    them (the units taken from ``available``); returns the order and the product id."""
    engine = make_engine(url, pool_size=1)
    try:
        product = new_product(stock=10)
        order = Order.place(
            order_id=new_order_id(),
            user_id=UserId(f"usr-{secrets.token_hex(6)}"),
            lines=(OrderLine(product.product_id, units, product.price),),
            discount_policy_id=None,
            discount_amount=0,
            delivery_fee=0,
            payment_amount=units * product.price,
            payment_type=PaymentType.CREDIT,
            at=now() - timedelta(hours=1),
            pay_within=timedelta(seconds=1),
        )
        async with SqlUnitOfWorkFactory(engine)() as uow:
            await uow.products.add(product, now())
            assert await uow.products.take_stock(product.product_id, units)
            await uow.orders.add(order)
            await uow.commit()
        return order, product.product_id
    finally:
        await engine.dispose()


def status_is(url: str, order: Order, status: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        engine = make_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                found = await conn.scalar(
                    text("SELECT status FROM orders WHERE order_id = :id"), {"id": order.order_id}
                )
        finally:
            await engine.dispose()
        return bool(found == status)

    return check


async def test_an_expirer_started_while_the_database_is_down_waits_then_expires_and_rides_out_another_outage(  # noqa: E501
    bare_database: str, tmp_path: Path
) -> None:
    link = link_to(bare_database)
    log = tmp_path / "expirer.log"
    # The link is cut: the database cannot be reached when the process starts.
    with expirer({"FLASHORDER_DATABASE_URL": through(bare_database, link.port)}, log) as proc:
        try:
            await until(
                "the expirer to wait for the database",
                logged(log, "startup.waiting"),
                proc=proc,
                log=log,
            )
            alive(proc, log)

            await link.open()
            await until("the schema", schema_is_there(bare_database), proc=proc, log=log)
            first, _ = await due_order(bare_database)
            await until(
                "the first order to expire",
                status_is(bare_database, first, "EXPIRED"),
                proc=proc,
                log=log,
            )

            # Down again while it runs: it logs each failed pass and goes on.
            await link.cut()
            seen = len(log.read_bytes())
            second, _ = await due_order(bare_database)
            await until(
                "a failed pass", logged(log, "expiry.unavailable", after=seen), proc=proc, log=log
            )
            alive(proc, log)
            assert await status_is(bare_database, second, "CREATED")()

            await link.open()
            await until(
                "the second order to expire",
                status_is(bare_database, second, "EXPIRED"),
                proc=proc,
                log=log,
            )
            alive(proc, log)
        finally:
            await link.cut()
    assert proc.returncode == 0, log.read_text()


def schema_is_there(url: str) -> Callable[[], Awaitable[bool]]:
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()

    async def check() -> bool:
        engine = make_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                tables = await conn.scalar(
                    text(
                        "SELECT COUNT(*) FROM information_schema.tables "
                        "WHERE table_schema = DATABASE() AND table_name = 'alembic_version'"
                    )
                )
                version = (
                    await conn.scalar(text("SELECT version_num FROM alembic_version"))
                    if tables
                    else None
                )
        finally:
            await engine.dispose()
        return version == head

    return check


async def test_an_expirer_expires_while_redis_is_down_and_gives_the_units_back_once_it_is_back(
    bare_database: str, redis_url: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(migrate, bare_database)
    redis_direct = redis_url_with_db(redis_url, REDIS_DB)
    link = link_to(redis_direct)
    redis = Redis.from_url(redis_direct)
    gate = RedisStockGate(redis)
    log = tmp_path / "expirer.log"
    order, product_id = await due_order(bare_database, units=2)
    try:
        # The gate as the API left it: 8 on sale, 2 reserved by the order.
        await gate.put(product_id, 10)
        await gate.reserve(order.order_id, order.user_id, [ReservationLine(product_id, 2, None)])
        assert await gate.available(product_id) == 8
        env = {
            "FLASHORDER_DATABASE_URL": bare_database,
            "FLASHORDER_REDIS_URL": f"redis://127.0.0.1:{link.port}/{REDIS_DB}",
        }
        # Redis cannot be reached when the process starts, nor while the order expires.
        with expirer(env, log) as proc:
            try:
                await until(
                    "the order to expire",
                    status_is(bare_database, order, "EXPIRED"),
                    proc=proc,
                    log=log,
                )
                await asyncio.sleep(1)  # a few more passes, each failing to release
                alive(proc, log)
                assert await gate.available(product_id) == 8

                await link.open()

                async def given_back() -> bool:
                    return await gate.available(product_id) == 10

                await until("the units back in the gate", given_back, proc=proc, log=log)
                alive(proc, log)
            finally:
                await link.cut()
        assert proc.returncode == 0, log.read_text()
    finally:
        keys = [key async for key in redis.scan_iter(match=f"*{product_id}*")]
        keys += [key async for key in redis.scan_iter(match=f"*{order.order_id}*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
