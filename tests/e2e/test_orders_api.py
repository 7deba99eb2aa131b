"""The order contract of docs/design.md, against the embedded default and the full stack."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from tests.invariants import check_stock
from tests.support.api import Api
from tests.support.calls import admin, new_product, order_body, place, post_order, product, rid

PROBLEM = "urn:flashorder:problem:"


async def wait_for_view(
    api: Api, order_id: str, status: str, *, user: str, timeout: float = 30
) -> dict[str, Any]:
    """The read model converges: poll until the order shows there with the given status (its
    own table: the buyer's read of the order answers from the write side while the read model
    trails), then return it as its buyer sees it."""
    query = text("SELECT status FROM order_views WHERE order_id = :o")
    async with asyncio.timeout(timeout):
        while True:
            async with api.engine.connect() as conn:
                projected = (await conn.execute(query, {"o": order_id})).scalar()
            if projected == status:
                reply = await api.call("GET", f"/api/v1/orders/{order_id}", token=api.token(user))
                assert reply.status == 200, reply.body
                return dict(reply.body)
            await asyncio.sleep(0.05)


async def test_the_original_example_request_verbatim_creates_an_order(api: Api) -> None:
    reply = await api.call(
        "POST",
        "/api/v1/products",
        {
            "productId": "PRD_240701120000001_0001_101",
            "name": "original",
            "price": 10050,
            "stock": 1_000_000,
        },
        token=admin(api),
    )
    assert reply.status in (201, 409)  # the stack keeps its database across tests
    body = {
        "userId": "test1234",
        "items": [
            {"productId": "PRD_240701120000001_0001_101", "quantity": 1, "productPrice": 10050}
        ],
        "discountPolicyId": None,
        "discountAmount": None,
        "deliveryFee": 0,
        "paymentAmount": 10050,
        "paymentType": "CREDIT",
    }
    reply = await api.call("POST", "/api/v1/orders", body, token=api.token("test1234"))
    assert reply.status == 201, reply.body
    assert reply.body["userId"] == "test1234"
    assert reply.body["status"] == "CREATED"
    assert reply.body["paymentAmount"] == 10050
    assert reply.body["items"][0]["productId"] == "PRD_240701120000001_0001_101"
    view = await wait_for_view(api, reply.body["orderId"], "CREATED", user="test1234")
    assert view["orderId"] == reply.body["orderId"]


async def test_a_product_reports_stock_available_and_sold(api: Api) -> None:
    pid = await new_product(api, stock=5)
    assert (await place(api, rid("u"), (pid, 2, 10050))).status == 201
    page = await product(api, pid)
    server_time = datetime.fromisoformat(page.pop("serverTime"))
    assert abs((server_time - datetime.now(UTC)).total_seconds()) < 60
    assert page == {
        "productId": pid,
        "name": "test item",
        "price": 10050,
        "stock": 5,
        "available": 3,
        "sold": 2,
        "maxPerUser": None,
        "saleStartsAt": None,
        "saleEndsAt": None,
        "payWithinSeconds": api.settings.pay_within_seconds,
        "queued": False,
        "queueOpensAt": None,
        "admissionPerSecond": None,
        "deliveryFee": 0,
    }


async def test_rejects_an_order_when_sold_out(api: Api) -> None:
    pid = await new_product(api, stock=1)
    assert (await place(api, rid("u"), (pid, 1, 10050))).status == 201
    reply = await place(api, rid("u"), (pid, 1, 10050))
    assert reply.status == 409
    assert reply.body["type"] == PROBLEM + "sold-out"
    assert reply.headers["content-type"].startswith("application/problem+json")
    await check_stock(api.engine, api.gate, [pid])


async def test_a_tampered_price_is_rejected_and_reserves_nothing(api: Api) -> None:
    pid = await new_product(api, stock=3)
    body = order_body(rid("u"), (pid, 1, 1))
    reply = await post_order(api, body)
    assert reply.status == 422
    assert reply.body["type"] == PROBLEM + "price-mismatch"
    assert reply.body["expected"] == 10050
    body = order_body(rid("u"), (pid, 1, 10050))
    body["paymentAmount"] = 1
    reply = await post_order(api, body)
    assert reply.status == 422
    assert reply.body["field"] == "paymentAmount"
    assert (await product(api, pid))["available"] == 3
    await check_stock(api.engine, api.gate, [pid])


async def test_a_discount_policy_is_applied_by_the_server(api: Api) -> None:
    pid = await new_product(api, stock=10, price=20000)
    policy = rid("DC")
    reply = await api.call(
        "POST",
        "/api/v1/discount-policies",
        {"policyId": policy, "kind": "PERCENT", "value": 10, "minOrderAmount": 30000},
        token=admin(api),
    )
    assert reply.status == 201, reply.body
    body = order_body(rid("u"), (pid, 2, 20000), discount=4000)
    body["discountPolicyId"] = policy
    reply = await post_order(api, body)
    assert reply.status == 201, reply.body
    assert reply.body["discountAmount"] == 4000
    assert reply.body["paymentAmount"] == 36000
    too_small = order_body(rid("u"), (pid, 1, 20000), discount=2000)
    too_small["discountPolicyId"] = policy
    reply = await post_order(api, too_small)
    assert reply.status == 422
    assert reply.body["type"] == PROBLEM + "discount-not-applicable"


async def test_an_idempotent_retry_gets_the_first_answer(api: Api) -> None:
    pid = await new_product(api, stock=10)
    user, key = rid("u"), rid("key")
    first = await place(api, user, (pid, 1, 10050), key=key)
    again = await place(api, user, (pid, 1, 10050), key=key)
    assert first.status == 201
    assert again.status == 201
    assert again.body == first.body
    assert again.headers.get("idempotent-replayed") == "true"
    other = await place(api, user, (pid, 2, 10050), key=key)
    assert other.status == 422
    assert other.body["type"] == PROBLEM + "idempotency-key-reused"
    assert (await product(api, pid))["sold"] == 1


async def test_an_order_of_several_products_is_all_or_nothing(api: Api) -> None:
    a = await new_product(api, stock=5)
    b = await new_product(api, stock=5)
    c = await new_product(api, stock=1)
    assert (await place(api, rid("u"), (c, 1, 10050))).status == 201
    reply = await place(api, rid("u"), (a, 2, 10050), (b, 2, 10050), (c, 1, 10050))
    assert reply.status == 409
    assert reply.body["productId"] == c
    assert [(await product(api, p))["available"] for p in (a, b, c)] == [5, 5, 0]
    await check_stock(api.engine, api.gate, [a, b, c])


async def test_cancelling_gives_the_stock_back_and_is_idempotent(api: Api) -> None:
    pid = await new_product(api, stock=2)
    user = rid("u")
    order = (await place(api, user, (pid, 2, 10050))).body
    cancel = f"/api/v1/orders/{order['orderId']}/cancel"
    first = await api.call("POST", cancel, token=api.token(user))
    again = await api.call("POST", cancel, token=api.token(user))
    assert first.status == again.status == 200
    assert first.body["status"] == again.body["status"] == "CANCELLED"
    assert (await product(api, pid))["available"] == 2
    await wait_for_view(api, order["orderId"], "CANCELLED", user=user)
    await check_stock(api.engine, api.gate, [pid])


async def test_a_user_lists_their_orders_page_by_page(api: Api) -> None:
    pid = await new_product(api, stock=10)
    user = rid("u")
    placed = [(await place(api, user, (pid, 1, 10050))).body["orderId"] for _ in range(5)]
    for order_id in placed:
        await wait_for_view(api, order_id, "CREATED", user=user)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        path = f"/api/v1/orders?userId={user}&limit=2" + (f"&cursor={cursor}" if cursor else "")
        reply = await api.call("GET", path, token=api.token(user))
        assert reply.status == 200, reply.body
        seen += [o["orderId"] for o in reply.body["items"]]
        cursor = reply.body["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(placed))


async def test_unknown_orders_and_products_are_404_problems(api: Api) -> None:
    token = api.token(rid("u"))
    for path in ("/api/v1/orders/nope", "/api/v1/products/nope", "/api/v1/nothing"):
        reply = await api.call("GET", path, token=token)
        assert reply.status == 404
        assert reply.body["type"] == PROBLEM + "not-found"
    reply = await api.call("POST", "/api/v1/orders/nope/cancel", token=token)
    assert reply.status == 404


async def test_stock_can_be_added_and_set_mid_sale(api: Api) -> None:
    pid = await new_product(api, stock=2)
    assert (await place(api, rid("u"), (pid, 2, 10050))).status == 201
    reply = await api.call("POST", f"/api/v1/products/{pid}/stock", {"add": 3}, token=admin(api))
    assert reply.status == 200
    assert (reply.body["stock"], reply.body["available"]) == (5, 3)
    reply = await api.call("POST", f"/api/v1/products/{pid}/stock", {"set": 1}, token=admin(api))
    assert reply.status == 409
    assert reply.body["type"] == PROBLEM + "stock-below-committed"
    reply = await api.call("POST", f"/api/v1/products/{pid}/stock", {"set": 4}, token=admin(api))
    assert (reply.body["stock"], reply.body["available"], reply.body["sold"]) == (4, 2, 2)
    await check_stock(api.engine, api.gate, [pid])


async def test_operations_endpoints_answer(api: Api) -> None:
    assert (await api.call("GET", "/healthz")).status == 200
    ready = await api.call("GET", "/readyz")
    assert ready.status == 200, ready.body
    assert ready.body["checks"]["database"] == "ok"
    assert "events" in ready.body["lag"]
    docs = await api.call("GET", "/openapi.json")
    assert "/api/v1/orders" in docs.body["paths"]
