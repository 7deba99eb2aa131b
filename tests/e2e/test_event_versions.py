"""What the versions of events mean, as docs/events.md says them, and every event the API
writes valid against its published schema.

Orders: 1 when created, +1 per change, each change an event. Products: ``stock.changed``
carries the product's version, which every change of its stock raises, orders and cancels
included (they publish order events, not ``stock.changed``): strictly increasing, with gaps.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import select

from flashorder.adapters.events.codec import encode_event
from flashorder.adapters.sql import tables
from flashorder.adapters.sql.outbox import row_event
from tests.event_schemas import event_errors
from tests.support.api import InProcessApi
from tests.support.calls import admin, new_product, place


async def outbox(api: InProcessApi, aggregate_id: str) -> list[dict[str, Any]]:
    """The aggregate's events exactly as the relay will put them on the wire, each checked
    against the published schema of its type."""
    async with api.engine.connect() as conn:
        rows = await conn.execute(
            select(tables.outbox)
            .where(tables.outbox.c.aggregate_id == aggregate_id)
            .order_by(tables.outbox.c.id)
        )
        events = [orjson.loads(encode_event(row_event(row))) for row in rows]
    for event in events:
        assert event_errors(event) == [], event
    return events


async def test_stock_changed_versions_rise_with_every_stock_change_and_skip_orders_and_cancels(
    embedded_api: InProcessApi,
) -> None:
    api = embedded_api
    product = await new_product(api, stock=10)  # version 1, published
    placed = await place(api, "buyer_v", (product, 2, 10050))  # 2, an order event
    assert placed.status == 201, placed.body
    added = await api.call(
        "POST", f"/api/v1/products/{product}/stock", {"add": 5}, token=admin(api)
    )  # 3, published
    assert added.status == 200, added.body
    cancelled = await api.call(
        "POST",
        f"/api/v1/orders/{placed.body['orderId']}/cancel",
        token=api.token("buyer_v"),
    )  # 4, an order event
    assert cancelled.status == 200, cancelled.body
    again = await api.call(
        "POST", f"/api/v1/products/{product}/stock", {"set": 20}, token=admin(api)
    )  # 5, published
    assert again.status == 200, again.body

    stock_events = await outbox(api, product)
    assert [(e["type"], e["aggregateVersion"]) for e in stock_events] == [
        ("stock.changed", 1),
        ("stock.changed", 3),
        ("stock.changed", 5),
    ]
    assert [e["payload"]["available"] for e in stock_events] == [10, 13, 20]
    order_events = await outbox(api, placed.body["orderId"])
    assert [(e["type"], e["aggregateVersion"]) for e in order_events] == [
        ("order.created", 1),
        ("order.cancelled", 2),
    ]
