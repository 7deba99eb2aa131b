"""The delivery fee is the shop's: the buyer's ``deliveryFee`` is checked like any price."""

from __future__ import annotations

from pathlib import Path

from tests.support.api import embedded
from tests.support.calls import new_product, order_body, post_order, product, rid

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
