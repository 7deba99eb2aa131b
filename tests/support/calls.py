"""The API calls tests make: random ids, tokens, products, order bodies, hostile bodies."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from tests.support.api import Api, Reply


def rid(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def admin(api: Api) -> str:
    """An admin's token (catalogue writes, anyone's orders)."""
    return api.token("admin", admin=True)


def reader(api: Api) -> str:
    """Some user's token: enough to read the catalogue."""
    return api.token("reader")


async def new_product(
    api: Api,
    *,
    stock: int,
    price: int = 10050,
    max_per_user: int | None = None,
    name: str = "test item",
) -> str:
    pid = rid("PRD")
    body: dict[str, Any] = {"productId": pid, "name": name, "price": price, "stock": stock}
    if max_per_user is not None:
        body["maxPerUser"] = max_per_user
    reply = await api.call("POST", "/api/v1/products", body, token=admin(api))
    assert reply.status == 201, reply.body
    return pid


async def new_queued_product(
    api: Api, *, stock: int, starts_in: float, rate: float | None, max_per_user: int = 1
) -> str:
    """A queued product whose pre-queue is open now and whose sale starts in ``starts_in`` s,
    admitting ``rate`` buyers a second (None: as fast as the service sustains)."""
    pid = rid("PRD")
    starts = datetime.now(UTC) + timedelta(seconds=starts_in)
    body = {
        "productId": pid,
        "name": "queued drop",
        "price": 10050,
        "stock": stock,
        "maxPerUser": max_per_user,
        "saleStartsAt": starts.isoformat(),
        "queued": True,
        "admissionPerSecond": rate,
    }
    reply = await api.call("POST", "/api/v1/products", body, token=admin(api))
    assert reply.status == 201, reply.body
    return pid


def order_body(
    user: str, *lines: tuple[str, int, int], fee: int = 0, discount: int | None = None
) -> dict[str, Any]:
    items = [{"productId": p, "quantity": q, "productPrice": price} for p, q, price in lines]
    total = sum(q * price for _, q, price in lines) - (discount or 0) + fee
    return {
        "userId": user,
        "items": items,
        "discountPolicyId": None,
        "discountAmount": discount,
        "deliveryFee": fee,
        "paymentAmount": total,
        "paymentType": "CREDIT",
    }


async def place(api: Api, user: str, *lines: tuple[str, int, int], key: str | None = None) -> Reply:
    """Place an order as ``user``, with their token."""
    headers = {"Idempotency-Key": key} if key else None
    return await api.call(
        "POST",
        "/api/v1/orders",
        order_body(user, *lines),
        headers=headers,
        token=api.token(user),
    )


async def post_order(api: Api, body: Any, **kwargs: Any) -> Reply:
    """POST a (possibly hostile) order body with the token of its ``userId``, or of ``u1``
    when that is no user id at all (the body is refused for it before the token matters)."""
    user = body.get("userId") if isinstance(body, dict) else None
    if not (isinstance(user, str) and re.fullmatch(r"[A-Za-z0-9_.:@\-]{1,64}", user)):
        user = "u1"
    return await api.call("POST", "/api/v1/orders", body, token=api.token(user), **kwargs)


async def product(api: Api, pid: str) -> dict[str, Any]:
    reply = await api.call("GET", f"/api/v1/products/{pid}", token=reader(api))
    assert reply.status == 200, reply.body
    body: dict[str, Any] = reply.body
    return body


def mutations(pid: str) -> list[tuple[str, dict[str, Any] | list[Any] | str | None]]:
    """Order bodies for product ``pid``, each wrong in one way, with a label."""
    good = order_body("u1", (pid, 1, 10050))
    bad: list[tuple[str, Any]] = []
    for field, value in [
        ("userId", ""),
        ("userId", "x" * 65),
        ("userId", "robert'); DROP TABLE orders;--"),
        ("userId", None),
        ("items", []),
        ("items", None),
        ("items", [{"productId": pid, "quantity": -1, "productPrice": 10050}]),
        ("items", [{"productId": pid, "quantity": 0, "productPrice": 10050}]),
        ("items", [{"productId": pid, "quantity": 10**30, "productPrice": 10050}]),
        ("items", [{"productId": pid, "quantity": 1.5, "productPrice": 10050}]),
        ("items", [{"productId": pid, "quantity": "1", "productPrice": "10050"}]),
        ("items", [{"productId": pid, "quantity": 1, "productPrice": -10050}]),
        ("items", [{"productId": pid, "quantity": 1}]),
        ("items", [{"productId": pid, "quantity": 1, "productPrice": 10050, "extra": 1}]),
        ("paymentAmount", -1),
        ("paymentAmount", "10050"),
        ("paymentType", "BITCOIN"),
        ("deliveryFee", -5),
        ("discountAmount", -5),
        ("discountPolicyId", "NO_SUCH_POLICY"),
        ("surprise", True),
    ]:
        body = dict(good)
        body[field] = value
        bad.append((f"{field}={value!r}"[:40], body))
    bad.append(("not an object", [1, 2, 3]))
    bad.append(("a string", "hello"))
    bad.append(("null", None))
    bad.append(("unknown product", order_body("u1", ("NO_SUCH_PRODUCT", 1, 10050))))
    bad.append(("duplicate lines", order_body("u1", (pid, 1, 10050), (pid, 1, 10050))))
    return bad


@asynccontextmanager
async def jwks_served(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """An identity provider's JWKS endpoint on a free local port: its URL."""
    app = web.Application()
    app.router.add_get("/jwks", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/jwks"
    finally:
        await runner.cleanup()
