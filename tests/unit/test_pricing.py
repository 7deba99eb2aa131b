from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashorder.domain import errors
from flashorder.domain.model import (
    DiscountKind,
    DiscountPolicy,
    DiscountPolicyId,
    Product,
    ProductId,
)
from flashorder.domain.pricing import DeliveryRule, Quote, RequestedLine, check_quote

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PID = ProductId("PRD_240701120000001_0001_101")


def product(price: int = 10050, pid: ProductId = PID) -> Product:
    return Product(pid, "keyboard", price, stock=10, available=10)


def quote(
    lines: list[RequestedLine],
    *,
    catalogue: dict[ProductId, Product] | None = None,
    policy: DiscountPolicy | None = None,
    discount: int | None = None,
    fee: int = 0,
    payment: int,
    delivery: DeliveryRule | None = None,
) -> Quote:
    return check_quote(
        requested=lines,
        catalogue=catalogue if catalogue is not None else {PID: product()},
        policy=policy,
        claimed_discount=discount,
        delivery_fee=fee,
        claimed_payment=payment,
        at=NOW,
        delivery=delivery or DeliveryRule(),
    )


def test_accepts_the_original_example_order() -> None:
    q = check_quote(
        requested=[RequestedLine(PID, 1, 10050)],
        catalogue={PID: product()},
        policy=None,
        claimed_discount=None,
        delivery_fee=0,
        claimed_payment=10050,
        at=NOW,
    )
    assert q.payment_amount == 10050
    assert q.lines[0].unit_price == 10050


def test_rejects_a_tampered_unit_price() -> None:
    with pytest.raises(errors.PriceMismatch) as caught:
        quote([RequestedLine(PID, 1, 50)], payment=50)
    assert caught.value.expected == 10050
    assert caught.value.given == 50


def test_rejects_a_payment_amount_that_does_not_add_up() -> None:
    with pytest.raises(errors.PriceMismatch) as caught:
        quote(
            [RequestedLine(PID, 2, 10050)],
            fee=3000,
            payment=20100,
            delivery=DeliveryRule(flat=3000),
        )
    assert caught.value.field == "paymentAmount"
    assert caught.value.expected == 23100


@pytest.mark.parametrize("claimed", [0, 1, 2999, 3001, 10**9])
def test_rejects_a_delivery_fee_the_shop_does_not_charge(claimed: int) -> None:
    with pytest.raises(errors.PriceMismatch) as caught:
        quote(
            [RequestedLine(PID, 1, 10050)],
            fee=claimed,
            payment=10050 + claimed,
            delivery=DeliveryRule(flat=3000),
        )
    assert (caught.value.field, caught.value.expected, caught.value.given) == (
        "deliveryFee",
        3000,
        claimed,
    )


def test_the_default_rule_charges_no_delivery_and_a_claimed_fee_is_refused() -> None:
    with pytest.raises(errors.PriceMismatch) as caught:
        quote([RequestedLine(PID, 1, 10050)], fee=5000, payment=15050)
    assert caught.value.field == "deliveryFee"


def test_delivery_is_free_from_the_shops_amount_after_the_discount() -> None:
    rule = DeliveryRule(flat=3000, free_from=20000)
    policy = DiscountPolicy(DiscountPolicyId("OFF"), DiscountKind.FIXED, 100)
    # 2 x 10050 = 20100, minus 100 = 20000: free.
    free = quote(
        [RequestedLine(PID, 2, 10050)], policy=policy, discount=100, payment=20000, delivery=rule
    )
    assert free.delivery_fee == 0
    # One unit: 10050 is below it, the flat fee is due.
    charged = quote([RequestedLine(PID, 1, 10050)], fee=3000, payment=13050, delivery=rule)
    assert charged.payment_amount == 13050
    with pytest.raises(errors.PriceMismatch):
        quote([RequestedLine(PID, 1, 10050)], fee=0, payment=10050, delivery=rule)


def test_an_orders_fee_is_the_highest_of_its_products_fees_and_the_shops() -> None:
    bulky, small, plain = ProductId("BULKY"), ProductId("SMALL"), ProductId("PLAIN")
    catalogue = {
        bulky: Product(bulky, "sofa", 50000, stock=5, available=5, delivery_fee=8000),
        small: Product(small, "lamp", 2000, stock=5, available=5, delivery_fee=1200),
        plain: Product(plain, "pen", 100, stock=5, available=5),
    }
    rule = DeliveryRule(flat=3000)

    def fee_of(*lines: tuple[ProductId, int]) -> int:
        requested = [RequestedLine(p, q, catalogue[p].price) for p, q in lines]
        expected = rule.fee_for(
            sum(catalogue[p].price * q for p, q in lines),
            (catalogue[p].delivery_fee for p, _ in lines),
        )
        items = sum(catalogue[p].price * q for p, q in lines)
        q = quote(
            requested, catalogue=catalogue, fee=expected, payment=items + expected, delivery=rule
        )
        return q.delivery_fee

    # One parcel: the costliest product sets the fee, once, whatever the quantities.
    assert fee_of((bulky, 1), (small, 3), (plain, 2)) == 8000
    assert fee_of((bulky, 3)) == 8000
    # Below the shop's flat fee, the flat fee.
    assert fee_of((small, 1), (plain, 1)) == 3000
    assert fee_of((plain, 1)) == 3000
    # Any other figure is refused, the sum of the fees included.
    with pytest.raises(errors.PriceMismatch) as caught:
        quote(
            [RequestedLine(bulky, 1, 50000), RequestedLine(small, 1, 2000)],
            catalogue=catalogue,
            fee=8000 + 1200,
            payment=52000 + 9200,
            delivery=rule,
        )
    assert (caught.value.field, caught.value.expected) == ("deliveryFee", 8000)


def test_the_free_delivery_threshold_waives_the_shops_fee_but_not_a_products_own() -> None:
    bulky, plain = ProductId("BULKY"), ProductId("PLAIN")
    catalogue = {
        bulky: Product(bulky, "sofa", 50000, stock=5, available=5, delivery_fee=8000),
        plain: Product(plain, "pen", 30000, stock=5, available=5),
    }
    rule = DeliveryRule(flat=3000, free_from=20000)

    free = quote(
        [RequestedLine(plain, 1, 30000)], catalogue=catalogue, payment=30000, delivery=rule
    )
    assert free.delivery_fee == 0
    bulky_anyway = quote(
        [RequestedLine(bulky, 1, 50000)],
        catalogue=catalogue,
        fee=8000,
        payment=58000,
        delivery=rule,
    )
    assert bulky_anyway.delivery_fee == 8000
    with pytest.raises(errors.PriceMismatch):
        quote([RequestedLine(bulky, 1, 50000)], catalogue=catalogue, payment=50000, delivery=rule)


def test_a_product_cannot_have_a_negative_delivery_fee() -> None:
    with pytest.raises(errors.InvalidOrder, match="deliveryFee"):
        Product(PID, "keyboard", 100, stock=1, available=1, delivery_fee=-1)


@given(
    fees=st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=10),
    flat=st.integers(min_value=0, max_value=10**12),
    amount=st.integers(min_value=0, max_value=10**13),
    free_from=st.none() | st.integers(min_value=0, max_value=10**13),
)
def test_the_fee_is_one_of_the_fees_and_never_beyond_the_largest_amount(
    fees: list[int], flat: int, amount: int, free_from: int | None
) -> None:
    fee = DeliveryRule(flat=flat, free_from=free_from).fee_for(amount, fees)

    assert fee >= max(fees)
    assert fee in {*fees, flat, 0}
    assert fee <= 10**12  # the totals' columns keep room for one amount, not a sum of them


def test_rejects_a_discount_the_policy_does_not_give() -> None:
    policy = DiscountPolicy(DiscountPolicyId("TEN"), DiscountKind.PERCENT, 10)
    with pytest.raises(errors.PriceMismatch) as caught:
        quote([RequestedLine(PID, 1, 10050)], policy=policy, discount=5000, payment=5050)
    assert caught.value.expected == 1005


def test_rejects_a_discount_claimed_without_a_policy() -> None:
    with pytest.raises(errors.PriceMismatch):
        quote([RequestedLine(PID, 1, 10050)], discount=100, payment=9950)


def test_rejects_unknown_products_and_duplicate_lines() -> None:
    with pytest.raises(errors.UnknownReference):
        quote([RequestedLine(ProductId("nope"), 1, 1)], payment=1)
    with pytest.raises(errors.InvalidOrder):
        quote([RequestedLine(PID, 1, 10050), RequestedLine(PID, 1, 10050)], payment=20100)


def test_rejects_non_positive_quantities_and_empty_orders() -> None:
    with pytest.raises(errors.InvalidOrder):
        quote([RequestedLine(PID, 0, 10050)], payment=0)
    with pytest.raises(errors.InvalidOrder):
        quote([], payment=0)


def test_a_policy_outside_its_window_or_minimum_does_not_apply() -> None:
    early = DiscountPolicy(
        DiscountPolicyId("LATER"), DiscountKind.FIXED, 100, valid_from=NOW + timedelta(hours=1)
    )
    expired = DiscountPolicy(DiscountPolicyId("OLD"), DiscountKind.FIXED, 100, valid_until=NOW)
    minimum = DiscountPolicy(
        DiscountPolicyId("BIG"), DiscountKind.FIXED, 100, min_order_amount=50_000
    )
    for policy in (early, expired, minimum):
        with pytest.raises(errors.DiscountNotApplicable):
            policy.discount_for(10050, NOW)


@given(
    price=st.integers(min_value=0, max_value=10**7),
    quantity=st.integers(min_value=1, max_value=1000),
    percent=st.integers(min_value=1, max_value=100),
    fee=st.integers(min_value=0, max_value=10**5),
    cap=st.none() | st.integers(min_value=0, max_value=10**9),
)
def test_the_server_price_is_always_consistent(
    price: int, quantity: int, percent: int, fee: int, cap: int | None
) -> None:
    policy = DiscountPolicy(DiscountPolicyId("P"), DiscountKind.PERCENT, percent, max_discount=cap)
    subtotal = price * quantity
    discount = policy.discount_for(subtotal, NOW)
    q = check_quote(
        requested=[RequestedLine(PID, quantity, price)],
        catalogue={PID: product(price)},
        policy=policy,
        claimed_discount=discount,
        delivery_fee=fee,
        claimed_payment=subtotal - discount + fee,
        delivery=DeliveryRule(flat=fee),
        at=NOW,
    )
    assert 0 <= q.discount_amount <= q.items_amount
    assert q.discount_amount <= subtotal * percent / 100
    assert q.payment_amount == q.items_amount - q.discount_amount + fee >= fee


@given(value=st.integers(min_value=1, max_value=10**9), subtotal=st.integers(0, 10**9))
def test_a_fixed_discount_never_exceeds_the_items(value: int, subtotal: int) -> None:
    policy = DiscountPolicy(DiscountPolicyId("F"), DiscountKind.FIXED, value)
    assert policy.discount_for(subtotal, NOW) == min(value, subtotal)


def test_percent_policies_are_bounded() -> None:
    with pytest.raises(errors.InvalidOrder):
        DiscountPolicy(DiscountPolicyId("X"), DiscountKind.PERCENT, 101)
