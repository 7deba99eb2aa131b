"""The order's life as the domain decides it: sale windows, payment, expiry, refunds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashorder.domain import errors
from flashorder.domain.events import (
    ORDER_CANCELLED,
    ORDER_CREATED,
    ORDER_DEADLINE_EXTENDED,
    ORDER_EXPIRED,
    ORDER_PAID,
    PAYMENT_REFUND_DUE,
)
from flashorder.domain.model import (
    Order,
    OrderId,
    OrderLine,
    OrderStatus,
    PaymentOutcome,
    PaymentStatus,
    PaymentType,
    Product,
    ProductId,
    UserId,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
GRACE = timedelta(minutes=5)


def placed(pay_within: timedelta = timedelta(minutes=10)) -> Order:
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
        pay_within=pay_within,
    )


def pay(order: Order, status: PaymentStatus, *, at: datetime, amount: int = 1000) -> PaymentOutcome:
    return order.record_payment(
        status=status, amount=amount, payment_ref="evt-1", at=at, grace=GRACE
    )


def product(**window: datetime | None) -> Product:
    return Product(ProductId("p-1"), "item", 500, stock=10, available=10, **window)  # type: ignore[arg-type]


def test_an_order_must_be_paid_within_its_window() -> None:
    order = placed(timedelta(seconds=90))
    assert order.pay_by == NOW + timedelta(seconds=90)
    assert order.snapshot()["payBy"] == order.pay_by.isoformat()
    assert order.snapshot()["paidAt"] is None


def test_a_successful_payment_in_time_makes_the_order_paid() -> None:
    order = placed()
    assert pay(order, PaymentStatus.SUCCEEDED, at=NOW + timedelta(minutes=1)) is PaymentOutcome.PAID
    assert order.status is OrderStatus.PAID
    assert order.version == 2
    assert order.paid_at == NOW + timedelta(minutes=1)
    assert order.payment_ref == "evt-1"
    assert [e.type for e in order.events] == [ORDER_CREATED, ORDER_PAID]


def test_a_wrong_amount_is_refused_and_changes_nothing() -> None:
    order = placed()
    with pytest.raises(errors.PaymentAmountMismatch):
        pay(order, PaymentStatus.SUCCEEDED, at=NOW, amount=999)
    assert order.status is OrderStatus.CREATED
    assert order.version == 1
    assert [e.type for e in order.events] == [ORDER_CREATED]


def test_processing_extends_the_deadline_once() -> None:
    order = placed()
    late = NOW + timedelta(minutes=9)
    assert pay(order, PaymentStatus.PROCESSING, at=late) is PaymentOutcome.EXTENDED
    assert order.pay_by == late + GRACE
    assert order.status is OrderStatus.CREATED
    assert pay(order, PaymentStatus.PROCESSING, at=late + GRACE) is PaymentOutcome.UNCHANGED
    assert order.pay_by == late + GRACE
    assert [e.type for e in order.events] == [ORDER_CREATED, ORDER_DEADLINE_EXTENDED]


def test_processing_never_shortens_the_deadline() -> None:
    order = placed(timedelta(hours=1))
    pay(order, PaymentStatus.PROCESSING, at=NOW)
    assert order.pay_by == NOW + timedelta(hours=1)


def test_a_failed_payment_leaves_the_order_waiting_for_its_deadline() -> None:
    order = placed()
    assert pay(order, PaymentStatus.FAILED, at=NOW) is PaymentOutcome.UNCHANGED
    assert order.status is OrderStatus.CREATED
    assert order.version == 1


def test_an_order_expires_only_once_due_and_only_from_created() -> None:
    order = placed()
    assert not order.expire(order.pay_by - timedelta(microseconds=1))
    assert order.expire(order.pay_by)
    assert order.status is OrderStatus.EXPIRED
    assert not order.expire(order.pay_by + timedelta(hours=1))
    assert [e.type for e in order.events] == [ORDER_CREATED, ORDER_EXPIRED]


def test_a_paid_order_never_expires() -> None:
    order = placed()
    pay(order, PaymentStatus.SUCCEEDED, at=NOW)
    assert not order.expire(order.pay_by + timedelta(days=1))
    assert order.status is OrderStatus.PAID


@pytest.mark.parametrize("end", ["expire", "cancel"])
def test_a_late_payment_never_revives_the_order_and_is_announced_for_a_refund(end: str) -> None:
    order = placed()
    if end == "expire":
        order.expire(order.pay_by)
    else:
        order.cancel(NOW)
    final, version = order.status, order.version
    outcome = pay(order, PaymentStatus.SUCCEEDED, at=order.pay_by + timedelta(minutes=1))
    assert outcome is PaymentOutcome.REFUND_DUE
    assert (order.status, order.version) == (final, version)
    refund = order.events[-1]
    assert refund.type == PAYMENT_REFUND_DUE
    assert refund.payload["reason"] == "late-payment"
    assert refund.payload["amount"] == 1000
    assert refund.aggregate_version == version


def test_a_second_payment_of_a_paid_order_is_announced_for_a_refund() -> None:
    order = placed()
    pay(order, PaymentStatus.SUCCEEDED, at=NOW)
    outcome = order.record_payment(
        status=PaymentStatus.SUCCEEDED, amount=1000, payment_ref="evt-2", at=NOW, grace=GRACE
    )
    assert outcome is PaymentOutcome.REFUND_DUE
    assert order.events[-1].payload["paymentRef"] == "evt-2"


def test_cancelling_a_paid_order_announces_its_refund() -> None:
    order = placed()
    pay(order, PaymentStatus.SUCCEEDED, at=NOW)
    assert order.cancel(NOW + timedelta(minutes=1))
    assert order.status is OrderStatus.CANCELLED
    assert [e.type for e in order.events][-2:] == [ORDER_CANCELLED, PAYMENT_REFUND_DUE]
    assert order.events[-1].payload["reason"] == "cancelled-after-payment"
    assert order.events[-1].payload["paymentRef"] == "evt-1"


def test_an_expired_order_cannot_be_cancelled() -> None:
    order = placed()
    order.expire(order.pay_by)
    with pytest.raises(errors.OrderStateConflict):
        order.cancel(order.pay_by)


def test_a_save_is_guarded_by_the_status_the_order_was_loaded_with() -> None:
    order = placed()
    order.events.clear()
    assert order.guard_status is OrderStatus.CREATED
    pay(order, PaymentStatus.SUCCEEDED, at=NOW)
    order.cancel(NOW)
    assert order.guard_status is OrderStatus.CREATED
    assert order.status is OrderStatus.CANCELLED


@given(st.lists(st.sampled_from(["pay", "processing", "failed", "expire", "cancel"]), max_size=8))
def test_an_order_leaves_created_at_most_once_whatever_happens(steps: list[str]) -> None:
    order = placed()
    at = NOW
    left_created: list[OrderStatus] = []
    for step in steps:
        at += timedelta(minutes=4)
        before = order.status
        try:
            if step == "expire":
                order.expire(at)
            elif step == "cancel":
                order.cancel(at)
            else:
                status = {"pay": "succeeded", "processing": "processing", "failed": "failed"}[step]
                pay(order, PaymentStatus(status), at=at)
        except errors.OrderStateConflict:
            assert before is OrderStatus.EXPIRED
        if before is OrderStatus.CREATED and order.status is not OrderStatus.CREATED:
            left_created.append(order.status)
    assert len(left_created) <= 1
    types = [e.type for e in order.events]
    assert types.count(ORDER_PAID) + types.count(ORDER_EXPIRED) <= 1
    assert not (ORDER_EXPIRED in types and ORDER_CANCELLED in types)
    assert types.count(ORDER_DEADLINE_EXTENDED) <= 1
    versions = [e.aggregate_version for e in order.events if e.type != PAYMENT_REFUND_DUE]
    assert versions == list(range(1, len(versions) + 1))


def test_orders_are_refused_before_the_start_with_the_time_left() -> None:
    starts = NOW + timedelta(seconds=30)
    with pytest.raises(errors.SaleNotStarted) as refused:
        product(sale_starts_at=starts).check_on_sale(NOW)
    assert refused.value.seconds_left == 30
    product(sale_starts_at=starts).check_on_sale(starts)


def test_orders_are_refused_from_the_end_on() -> None:
    ends = NOW + timedelta(seconds=30)
    product(sale_ends_at=ends).check_on_sale(ends - timedelta(microseconds=1))
    with pytest.raises(errors.SaleEnded):
        product(sale_ends_at=ends).check_on_sale(ends)


def test_a_window_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(errors.InvalidOrder):
        product(sale_starts_at=NOW, sale_ends_at=NOW)
