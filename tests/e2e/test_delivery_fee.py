"""The delivery fee is the server's: the shop's rule and the products' own fees, set through the
admin API. The buyer's ``deliveryFee`` is checked like any price."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import Api, InProcessApi, embedded
from tests.support.calls import admin, new_product, order_body, post_order, product, rid

PROBLEM = "urn:flashorder:problem:"


async def test_a_buyer_cannot_choose_the_delivery_fee(tmp_path: Path) -> None:
    async with embedded(tmp_path, delivery_fee=3000, delivery_free_from=20100) as api:
        pid = await new_product(api, stock=10)

        for claimed in (0, 1, 2999, 3001):
            reply = await post_order(api, order_body(rid("u"), (pid, 1, 10050), fee=claimed))
            assert reply.status == 422, (claimed, reply.body)
            assert reply.body["type"] == PROBLEM + "price-mismatch"
            assert (reply.body["field"], reply.body["expected"]) == ("deliveryFee", 3000)

        charged = await post_order(api, order_body(rid("u"), (pid, 1, 10050), fee=3000))
        assert charged.status == 201, charged.body
        assert (charged.body["deliveryFee"], charged.body["paymentAmount"]) == (3000, 13050)
        # From the shop's amount on, delivery is free, and a fee claimed anyway is refused.
        free = await post_order(api, order_body(rid("u"), (pid, 2, 10050), fee=0))
        assert free.status == 201, free.body
        assert (free.body["deliveryFee"], free.body["paymentAmount"]) == (0, 20100)
        paid_anyway = await post_order(api, order_body(rid("u"), (pid, 2, 10050), fee=3000))
        assert paid_anyway.status == 422
        # Only the two accepted orders took stock.
        assert (await product(api, pid))["sold"] == 3


async def test_by_default_delivery_is_free_and_the_original_example_works_as_written(
    tmp_path: Path,
) -> None:
    async with embedded(tmp_path) as api:
        pid = await new_product(api, stock=10)

        tampered = await post_order(api, order_body("test1234", (pid, 1, 10050), fee=5000))
        original = await post_order(api, order_body("test1234", (pid, 1, 10050), fee=0))

        assert tampered.status == 422, tampered.body
        assert tampered.body["field"] == "deliveryFee"
        assert original.status == 201, original.body
        assert original.body["paymentAmount"] == 10050


# --- a product's own fee, set through the admin API -----------------------------------------------


async def fee_product(api: Api, *, price: int, fee: int | None) -> str:
    pid = rid("PRD")
    body: dict[str, Any] = {"productId": pid, "name": "fee item", "price": price, "stock": 50}
    if fee is not None:
        body["deliveryFee"] = fee
    reply = await api.call("POST", "/api/v1/products", body, token=admin(api))
    assert reply.status == 201, reply.body
    assert reply.body["deliveryFee"] == (fee or 0)
    return pid


async def test_an_orders_fee_is_the_highest_of_its_products_own_fees(api: Api) -> None:
    sofa = await fee_product(api, price=50000, fee=8000)
    lamp = await fee_product(api, price=2000, fee=1200)
    pen = await fee_product(api, price=100, fee=None)
    assert (await product(api, sofa))["deliveryFee"] == 8000

    lines = ((sofa, 1, 50000), (lamp, 3, 2000), (pen, 2, 100))
    # The shop charges nothing here (the default rule): the costliest product sets the fee,
    # once; neither the sum of the fees nor any other figure is accepted.
    for claimed in (0, 1200, 7999, 8000 + 1200, 8000 * 2):
        reply = await post_order(api, order_body(rid("u"), *lines, fee=claimed))
        assert reply.status == 422, (claimed, reply.body)
        assert reply.body["type"] == PROBLEM + "price-mismatch"
        assert (reply.body["field"], reply.body["expected"]) == ("deliveryFee", 8000)
    charged = await post_order(api, order_body(rid("u"), *lines, fee=8000))
    assert charged.status == 201, charged.body
    assert (charged.body["deliveryFee"], charged.body["paymentAmount"]) == (8000, 64200)
    plain = await post_order(api, order_body(rid("u"), (pen, 1, 100), fee=0))
    assert plain.status == 201, plain.body
    # Only the accepted orders took stock.
    assert [(await product(api, p))["sold"] for p in (sofa, lamp, pen)] == [1, 3, 3]


async def test_an_admin_changes_a_products_fee_and_orders_follow_within_the_cache_time(
    api: Api,
) -> None:
    pid = await fee_product(api, price=1000, fee=500)

    changed = await api.call(
        "PATCH", f"/api/v1/products/{pid}", {"deliveryFee": 900}, token=admin(api)
    )

    assert changed.status == 200, changed.body
    assert changed.body["deliveryFee"] == 900
    assert (await product(api, pid))["deliveryFee"] == 900
    started = time.monotonic()
    while (
        reply := await post_order(api, order_body(rid("u"), (pid, 1, 1000), fee=900))
    ).status != 201:
        assert (reply.body["field"], reply.body["expected"]) == ("deliveryFee", 500)
        # Every worker's catalogue cache lets the change through within its 5 s.
        assert time.monotonic() - started < 6, "the change did not reach every worker"
        await asyncio.sleep(0.1)
    await asyncio.sleep(5.5)  # past every worker's cache: the old fee is refused everywhere
    for _ in range(4):
        old = await post_order(api, order_body(rid("u"), (pid, 1, 1000), fee=500))
        assert old.status == 422, old.body
        assert old.body["expected"] == 900
    # The other fields of the product did not move.
    after = await product(api, pid)
    assert (after["price"], after["stock"], after["saleStartsAt"]) == (1000, 50, None)


@pytest.mark.parametrize(
    "bad",
    [-1, 10**12 + 1, "500", 1.5, None, True],
    ids=["negative", "too-large", "string", "float", "null", "bool"],
)
async def test_a_products_fee_must_be_an_amount(embedded_api: InProcessApi, bad: object) -> None:
    api = embedded_api
    created = await api.call(
        "POST",
        "/api/v1/products",
        {"productId": rid("PRD"), "name": "x", "price": 1, "stock": 1, "deliveryFee": bad},
        token=admin(api),
    )
    assert created.status == 422, created.body
    pid = await fee_product(api, price=1000, fee=300)
    changed = await api.call(
        "PATCH", f"/api/v1/products/{pid}", {"deliveryFee": bad}, token=admin(api)
    )
    assert changed.status == 422, changed.body
    assert (await product(api, pid))["deliveryFee"] == 300


async def test_only_an_admin_sets_a_products_fee(embedded_api: InProcessApi) -> None:
    api = embedded_api
    pid = await fee_product(api, price=1000, fee=300)

    reply = await api.call(
        "PATCH", f"/api/v1/products/{pid}", {"deliveryFee": 0}, token=api.token("buyer")
    )

    assert reply.status == 403, reply.body
    assert (await product(api, pid))["deliveryFee"] == 300


async def test_the_shops_free_delivery_waives_its_own_fee_but_not_a_products(
    tmp_path: Path,
) -> None:
    async with embedded(tmp_path, delivery_fee=3000, delivery_free_from=20000) as api:
        sofa = await fee_product(api, price=50000, fee=8000)
        lamp = await fee_product(api, price=2000, fee=1200)

        # Above the threshold: the shop's 3000 is waived, the sofa's own 8000 is not.
        sofa_order = await post_order(api, order_body(rid("u"), (sofa, 1, 50000), fee=8000))
        assert sofa_order.status == 201, sofa_order.body
        free = await post_order(api, order_body(rid("u"), (lamp, 10, 2000), fee=1200))
        assert free.status == 201, free.body
        # Below it: the shop's 3000 is higher than the lamp's own 1200.
        small = await post_order(api, order_body(rid("u"), (lamp, 1, 2000), fee=1200))
        assert small.status == 422
        assert small.body["expected"] == 3000
