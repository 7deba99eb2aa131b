"""The owner's order read: the read model when it is current, the write side when not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from flashorder.application.ports import JsonObject, OrderHead
from flashorder.application.queries import order_view
from flashorder.domain import errors
from flashorder.domain.model import OrderId, ProductId, UserId


class Views:
    def __init__(self, views: Mapping[str, JsonObject]) -> None:
        self.views = dict(views)

    async def order(self, order_id: OrderId) -> JsonObject | None:
        return self.views.get(order_id)

    async def apply(self, events: Any) -> int:
        raise NotImplementedError

    async def orders_of(self, user_id: UserId, *, cursor: str | None, limit: int) -> Any:
        raise NotImplementedError

    async def product_sales(self, product_id: ProductId) -> Any:
        raise NotImplementedError


class WriteSide:
    def __init__(self, orders: Mapping[str, JsonObject]) -> None:
        self.orders = dict(orders)
        self.probes = 0

    async def head(self, order_id: OrderId) -> OrderHead | None:
        self.probes += 1
        body = self.orders.get(order_id)
        return None if body is None else OrderHead(UserId(body["userId"]), body["version"])

    async def snapshot(self, order_id: OrderId) -> JsonObject | None:
        return self.orders.get(order_id)


def order(status: str, version: int, user: str = "u1") -> JsonObject:
    return {"orderId": "o1", "userId": user, "status": status, "version": version}


async def read(views: Views, written: WriteSide, viewer: str | None = "u1") -> JsonObject:
    return await order_view(
        OrderId("o1"),
        viewer=None if viewer is None else UserId(viewer),
        read_model=views,
        lookup=written,
    )


async def test_an_order_not_yet_projected_is_read_from_the_write_side() -> None:
    assert await read(Views({}), WriteSide({"o1": order("CREATED", 1)})) == order("CREATED", 1)


async def test_an_older_view_gives_way_to_the_write_side() -> None:
    views, written = Views({"o1": order("CREATED", 1)}), WriteSide({"o1": order("PAID", 2)})
    assert (await read(views, written))["status"] == "PAID"


async def test_a_current_view_is_the_answer() -> None:
    views, written = Views({"o1": order("PAID", 2)}), WriteSide({"o1": order("PAID", 2)})
    assert await read(views, written) == order("PAID", 2)
    assert written.probes == 1


@pytest.mark.parametrize("final", ["CANCELLED", "EXPIRED"])
async def test_a_final_view_needs_no_probe(final: str) -> None:
    written = WriteSide({"o1": order(final, 2)})
    assert (await read(Views({"o1": order(final, 2)}), written))["status"] == final
    assert written.probes == 0


@pytest.mark.parametrize("projected", [True, False], ids=["projected", "not-yet"])
async def test_someone_elses_order_looks_absent(projected: bool) -> None:
    views = Views({"o1": order("CREATED", 1)} if projected else {})
    with pytest.raises(errors.OrderNotFound):
        await read(views, WriteSide({"o1": order("CREATED", 1)}), viewer="u2")


async def test_an_admin_reads_anyones_order_fresh() -> None:
    views, written = Views({"o1": order("CREATED", 1)}), WriteSide({"o1": order("PAID", 2)})
    assert (await read(views, written, viewer=None))["status"] == "PAID"


async def test_an_unknown_order_is_not_found() -> None:
    with pytest.raises(errors.OrderNotFound):
        await read(Views({}), WriteSide({}))
