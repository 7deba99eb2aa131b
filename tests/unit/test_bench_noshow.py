"""The no-show sale's checks: each passes a sound end of sale and fails a broken one."""

from __future__ import annotations

from datetime import datetime, timedelta

from flashorder_bench.checks import (
    expiry_lateness,
    expiry_seen_check,
    noshow_balance_check,
    resold_check,
)
from flashorder_bench.stores import OrderRow, OrderTimes, ProductRow, WriteModel

T0 = datetime(2026, 12, 2, 10, 0, 0)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _order(
    oid: str, status: str, units: int, placed: float, changed: float | None = None
) -> OrderTimes:
    """An order with a 3 s deadline, placed at ``placed`` and last changed at ``changed``."""
    return OrderTimes(oid, status, units, _at(placed), _at(changed or placed), _at(placed + 3))


#: Stock 4: o1 paid (2), o2 never paid and expired 0.5 s after its deadline (2 back), o3
#: bought those 2 later and paid.
SOUND = [
    _order("o1", "PAID", 2, 0.0, 1.0),
    _order("o2", "EXPIRED", 2, 0.1, 3.6),
    _order("o3", "PAID", 2, 4.0, 4.5),
]


def _model(times: list[OrderTimes], available: int, stock: int = 4) -> WriteModel:
    return WriteModel(
        products={"P1": ProductRow(stock, available, None)},
        orders={o.order_id: OrderRow(f"u{o.order_id}", o.status, 1) for o in times},
        items={o.order_id: [("P1", o.units)] for o in times},
    )


def test_a_sound_no_show_sale_passes_every_check() -> None:
    model = _model(SOUND, available=0)
    assert noshow_balance_check(model).verdict == "PASS"
    assert resold_check(model, {"P1": SOUND}).verdict == "PASS"
    seen = expiry_seen_check({"P1": SOUND})
    assert seen.verdict == "PASS"
    assert "p50 0.50s" in seen.detail


def test_units_lost_with_an_expired_order_break_the_balance() -> None:
    # The expiry marked o2 EXPIRED but its 2 units never came back: 2 paid + 0 + 0 != 4.
    times = SOUND[:2]
    assert noshow_balance_check(_model(times, available=0)).verdict == "FAIL"
    assert noshow_balance_check(_model(times, available=2)).verdict == "PASS"


def test_an_unpaid_hold_counts_with_the_paid_and_the_shelf() -> None:
    times = [*SOUND[:2], _order("o3", "CREATED", 2, 4.0)]
    assert noshow_balance_check(_model(times, available=0)).verdict == "PASS"
    assert noshow_balance_check(_model(times, available=1)).verdict == "FAIL"


def test_expired_units_neither_resold_nor_on_the_shelf_fail() -> None:
    times = SOUND[:2]
    assert resold_check(_model(times, available=0), {"P1": times}).verdict == "FAIL"
    assert resold_check(_model(times, available=2), {"P1": times}).verdict == "PASS"


def test_a_run_in_which_nothing_expired_fails() -> None:
    paid = [_order("o1", "PAID", 2, 0.0, 1.0), _order("o2", "PAID", 2, 0.1, 1.0)]
    assert expiry_seen_check({"P1": paid}).verdict == "FAIL"
    assert expiry_seen_check({}).verdict == "FAIL"


def test_an_expiry_without_a_later_sale_fails() -> None:
    assert expiry_seen_check({"P1": SOUND[:2]}).verdict == "FAIL"


def test_lateness_is_from_the_deadline_to_the_expiry() -> None:
    times = [SOUND[1], _order("o4", "EXPIRED", 1, 1.0, 6.0)]
    assert expiry_lateness({"P1": times}) == [0.5, 2.0]


def test_lateness_once_the_expirer_ran_leaves_out_the_earlier_deadlines() -> None:
    # o2's deadline (3.1 s) passed before any expiry (first at 3.6 s); o5's came after.
    times = [SOUND[1], _order("o5", "EXPIRED", 1, 2.0, 5.25)]
    assert expiry_lateness({"P1": times}, running=True) == [0.25]
    assert "once the expirer ran p50 0.25s" in expiry_seen_check({"P1": [*times, SOUND[2]]}).detail
