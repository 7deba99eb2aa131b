"""The lock strategy (the original design, the benchmark's baseline) on real MariaDB and Redis.

A baseline that oversold or lost orders would make every ratio against it meaningless.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flashorder.application import handlers
from flashorder.bootstrap import Service, build
from flashorder.config import Settings
from flashorder.domain import commands, errors
from flashorder.domain.model import PaymentType, ProductId, UserId
from flashorder.domain.pricing import RequestedLine
from tests.invariants import check_stock

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture
async def service(mariadb_database: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    settings = Settings(
        database_url=mariadb_database,
        redis_url=redis_url,
        kafka_bootstrap="unused:9092",
        strategy="lock",
        data_dir=tmp_path,
    )
    async with build(settings, background=False) as built:
        yield built


def order(user: str, pid: str, quantity: int = 1) -> commands.PlaceOrder:
    return commands.PlaceOrder(
        user_id=UserId(user),
        lines=(RequestedLine(ProductId(pid), quantity, 100),),
        discount_policy_id=None,
        discount_amount=None,
        delivery_fee=0,
        payment_amount=100 * quantity,
        payment_type=PaymentType.CREDIT,
    )


async def attempt(cmd: commands.PlaceOrder, service: Service) -> str:
    try:
        await handlers.place_order(cmd, deps=service.deps)
    except errors.SoldOut:
        return "sold-out"
    return "created"


async def test_the_lock_strategy_sells_exactly_the_stock_under_a_race(service: Service) -> None:
    pid = f"LOCK_{secrets.token_hex(4)}"
    await handlers.create_product(
        commands.CreateProduct(ProductId(pid), "baseline", 100, stock=50), deps=service.deps
    )
    outcomes = await asyncio.gather(
        *(attempt(order(f"u{i}_{pid}", pid), service) for i in range(300))
    )
    assert Counter(outcomes) == {"created": 50, "sold-out": 250}
    figures = await check_stock(service.engine, None, [pid])
    assert figures[pid] == {"stock": 50, "available": 0, "sold": 50}


async def test_the_lock_strategy_keeps_multi_product_orders_whole(service: Service) -> None:
    a, b = f"LOCKA_{secrets.token_hex(4)}", f"LOCKB_{secrets.token_hex(4)}"
    for pid, stock in ((a, 100), (b, 5)):
        await handlers.create_product(
            commands.CreateProduct(ProductId(pid), "baseline", 100, stock=stock),
            deps=service.deps,
        )

    def both(i: int) -> commands.PlaceOrder:
        # Half the orders list the products the other way round: locks are taken in product
        # order, so they cannot deadlock.
        lines = [RequestedLine(ProductId(a), 1, 100), RequestedLine(ProductId(b), 1, 100)]
        return commands.PlaceOrder(
            user_id=UserId(f"u{i}_{a}"),
            lines=tuple(lines if i % 2 else reversed(lines)),
            discount_policy_id=None,
            discount_amount=None,
            delivery_fee=0,
            payment_amount=200,
            payment_type=PaymentType.CREDIT,
        )

    outcomes = await asyncio.gather(*(attempt(both(i), service) for i in range(60)))
    assert Counter(outcomes) == {"created": 5, "sold-out": 55}
    figures = await check_stock(service.engine, None, [a, b])
    assert figures[a]["sold"] == figures[b]["sold"] == 5
