from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from flashorder.domain import errors
from flashorder.domain.events import ORDER_CANCELLED, ORDER_CREATED
from flashorder.domain.model import (
    Order,
    OrderId,
    OrderLine,
    OrderStatus,
    PaymentType,
    Product,
    ProductId,
    UserId,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def placed() -> Order:
    return Order.place(
        order_id=OrderId("o-1"),
        user_id=UserId("u-1"),
        lines=(OrderLine(ProductId("p-1"), 2, 500),),
        discount_policy_id=None,
        discount_amount=0,
        delivery_fee=0,
        payment_amount=1000,
        payment_type=PaymentType.CREDIT,
        at=NOW,
    )


def test_placing_an_order_records_order_created_with_the_whole_order() -> None:
    order = placed()
    assert [e.type for e in order.events] == [ORDER_CREATED]
    event = order.events[0]
    assert event.aggregate_id == "o-1"
    assert event.aggregate_version == 1
    assert event.payload["items"] == [
        {"productId": "p-1", "quantity": 2, "productPrice": 500, "amount": 1000}
    ]
    assert event.payload["paymentType"] == "CREDIT"


def test_cancelling_twice_changes_the_order_once() -> None:
    order = placed()
    assert order.cancel(NOW + timedelta(seconds=1)) is True
    assert order.cancel(NOW + timedelta(seconds=2)) is False
    assert order.status is OrderStatus.CANCELLED
    assert order.version == 2
    assert [e.type for e in order.events] == [ORDER_CREATED, ORDER_CANCELLED]
    assert order.events[1].aggregate_version == 2


@given(st.lists(st.booleans(), max_size=10))
def test_any_sequence_of_cancels_yields_at_most_one_cancelled_event(cancels: list[bool]) -> None:
    order = placed()
    for _ in cancels:
        order.cancel(NOW)
    cancelled = [e for e in order.events if e.type == ORDER_CANCELLED]
    assert len(cancelled) == (1 if cancels else 0)
    assert order.version == 1 + len(cancelled)


@given(
    stock=st.integers(0, 10_000),
    sold=st.integers(0, 10_000),
    change=st.integers(-20_000, 20_000),
)
def test_a_stock_change_never_goes_below_what_is_sold(stock: int, sold: int, change: int) -> None:
    sold = min(sold, stock)
    product = Product(ProductId("p"), "x", 1, stock=stock, available=stock - sold)
    try:
        delta = product.stock_change(add=change)
    except errors.StockBelowCommitted:
        assert stock + change < sold
    else:
        assert delta == change
        assert stock + delta >= sold
    try:
        delta = product.stock_change(set_to=max(change, 0))
    except errors.StockBelowCommitted:
        assert max(change, 0) < sold
    else:
        assert stock + delta == max(change, 0)
