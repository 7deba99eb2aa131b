"""Builders for the stock gate's suites: ids, reservation lines, and a Redis of the test's own."""

from __future__ import annotations

import uuid

from redis.asyncio import BlockingConnectionPool, Redis

from flashorder.adapters._redis.batch import Client
from flashorder.application.ports import ReservationLine
from flashorder.domain.model import OrderId, ProductId, UserId


def product() -> ProductId:
    return ProductId(f"PRD_{uuid.uuid4().hex}")


def order() -> OrderId:
    return OrderId(uuid.uuid4().hex)


def user() -> UserId:
    return UserId(f"user-{uuid.uuid4().hex[:8]}")


def line(
    product_id: ProductId, quantity: int = 1, max_per_user: int | None = None
) -> ReservationLine:
    return ReservationLine(product_id, quantity, max_per_user)


def redis_client(url: str, *, decode: bool = False) -> Redis:
    """A client whose callers queue for its 32 connections rather than fail."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=32, timeout=10, socket_timeout=5, decode_responses=decode
    )
    return Redis.from_pool(pool)


async def drop_keys(client: Client, prefix: str) -> None:
    """Delete the keys a test made under its own ``prefix``."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
    if keys:
        await client.delete(*keys)
