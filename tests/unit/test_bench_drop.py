"""The queued drop's checks and figures: each check passes a sound drop and fails the broken
one it is there to catch, and none passes on nothing."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from flashorder_bench.checks import (
    admission_pace_check,
    admitted_orders_check,
    drop_pace_checks,
    fair_draw_check,
    one_order_per_buyer_check,
    rank_correlation,
    tickets_end_check,
)
from flashorder_bench.drop import (
    DropOutcome,
    DropSide,
    TicketEnd,
    admission_bound,
    admissions_per_second,
    crowd,
    peak_in_flight,
    problem_type,
)
from flashorder_bench.results import dumps
from flashorder_bench.run import StrategyResult
from flashorder_bench.samples import ORDER, QUEUE_POLL, Samples
from flashorder_bench.scenarios import ScenarioSpec
from flashorder_bench.stats import Latency
from flashorder_bench.stores import OrderRow, ProductRow, WriteModel
from flashorder_bench.summary import drop_tables

T0 = datetime(2026, 12, 2, 14, 0, 0, tzinfo=UTC)
QUEUED = "Pt_0001"


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _ticket(
    user: str,
    rank: int,
    *,
    admitted: float | None = None,
    ended: str = "SOLD_OUT",
    final: str | None = None,
    late: bool = False,
    ticket_id: str | None = None,
) -> TicketEnd:
    return TicketEnd(
        user=user,
        ticket_id=ticket_id or f"t-{user}",
        before_start=not late,
        after_start=late,
        join_rank=rank,
        admitted_until=None if admitted is None else _at(admitted),
        ended=ended,
        final=final or ended,
        order_id=f"o-{user}" if ended == "ORDERED" else None,
    )


def _fair_drop(n: int = 400, admitted: int = 100, *, seed: int = 3) -> list[TicketEnd]:
    """``n`` buyers joined before the start in rank order; a random ``admitted`` of them were
    admitted, in a random order, 10 ms apart, and ordered; the others were told SOLD_OUT."""
    rng = random.Random(seed)
    chosen = rng.sample(range(n), admitted)
    when = {rank: i * 0.01 for i, rank in enumerate(chosen)}
    return [
        _ticket(f"u{r}", r, admitted=when[r], ended="ORDERED") if r in when else _ticket(f"u{r}", r)
        for r in range(n)
    ]


def _model(orders: dict[str, tuple[str, str]], stock: int = 10) -> WriteModel:
    """Orders ``order id → (user, product)`` of one unit each."""
    products = {p for _, p in orders.values()}
    return WriteModel(
        products={p: ProductRow(stock, stock - 1, 4) for p in products},
        orders={o: OrderRow(user, "CREATED", 1) for o, (user, _) in orders.items()},
        items={o: [(p, 1)] for o, (_, p) in orders.items()},
    )


def _side(p99: float, *, accepted: int = 10, failed: int = 0, deadline: int = 0) -> DropSide:
    lat = Latency(100, p99 / 4, p99 / 2, p99, p99, p99, p99 / 3)
    return DropSide(
        name="side",
        product_id="P",
        buyers=100,
        order_calls=100,
        accepted=accepted,
        units=accepted,
        order_latency=lat,
        accepted_per_s=50.0,
        seconds=2.0,
        server_errors=failed,
        deadline_503=deadline,
        transport_errors=0,
        peak_in_flight=4,
    )


def test_the_crowd_is_the_same_for_both_sides_and_its_tail_joins_late() -> None:
    spec = ScenarioSpec("queue", "t", 1000, 100, 1000, 4, 1, 7)
    buyers = crowd(spec, 0.1)
    assert buyers == crowd(spec, 0.1)
    assert len({b.user for b in buyers}) == 1000
    assert sum(b.late for b in buyers) == 100
    assert all(b.late for b in buyers[-100:])
    assert {b.quantity for b in buyers} == {1, 2}
    # One per buyer: every buyer takes one unit.
    assert {b.quantity for b in crowd(replace(spec, max_per_user=1), 0.1)} == {1}


def test_nobody_ordering_twice_passes_and_a_second_order_fails() -> None:
    model = _model({"o1": ("u1", "Pt_0000"), "o2": ("u1", QUEUED), "o3": ("u2", QUEUED)})
    assert one_order_per_buyer_check(model, ["Pt_0000", QUEUED]).verdict == "PASS"
    twice = _model({"o1": ("u1", QUEUED), "o2": ("u1", QUEUED)})
    check = one_order_per_buyer_check(twice, [QUEUED])
    assert check.verdict == "FAIL"
    assert "u1 has 2 orders" in check.detail
    assert one_order_per_buyer_check(WriteModel({}, {}, {}), [QUEUED]).verdict == "FAIL"


def test_orders_of_admitted_tickets_pass() -> None:
    tickets = [_ticket("u1", 0, admitted=0.0, ended="ORDERED"), _ticket("u2", 1)]
    model = _model({"o1": ("u1", QUEUED)})
    assert admitted_orders_check(model, QUEUED, tickets).verdict == "PASS"


def test_an_order_without_an_admission_fails() -> None:
    tickets = [_ticket("u1", 0, admitted=0.0, ended="ORDERED"), _ticket("u2", 1)]
    model = _model({"o1": ("u1", QUEUED), "o2": ("u2", QUEUED)})
    check = admitted_orders_check(model, QUEUED, tickets)
    assert check.verdict == "FAIL"
    assert "u2 ordered without an admission" in check.detail


def test_two_orders_on_one_admission_or_one_ticket_for_two_buyers_fail() -> None:
    tickets = [_ticket("u1", 0, admitted=0.0, ended="ORDERED")]
    twice = _model({"o1": ("u1", QUEUED), "o2": ("u1", QUEUED)})
    assert "u1 ordered twice" in admitted_orders_check(twice, QUEUED, tickets).detail
    shared = [
        _ticket("u1", 0, admitted=0.0, ended="ORDERED", ticket_id="t1"),
        _ticket("u2", 1, admitted=0.1, ended="ORDERED", ticket_id="t1"),
    ]
    model = _model({"o1": ("u1", QUEUED), "o2": ("u2", QUEUED)})
    check = admitted_orders_check(model, QUEUED, shared)
    assert check.verdict == "FAIL"
    assert "ticket t1 given to several buyers" in check.detail


def test_an_admission_check_without_orders_fails() -> None:
    tickets = [_ticket("u1", 0)]
    assert admitted_orders_check(WriteModel({}, {}, {}), QUEUED, tickets).verdict == "FAIL"
    assert admitted_orders_check(_model({}), QUEUED, []).verdict == "FAIL"


def test_tickets_that_end_ordered_or_sold_out_pass() -> None:
    tickets = [
        _ticket("u1", 0, admitted=0.0, ended="ORDERED"),
        _ticket("u2", 1),
        # Admitted for the last unit, which a buyer of two could not take.
        _ticket("u3", 2, admitted=0.1, ended="REFUSED:sold-out", final="EXPIRED"),
    ]
    check = tickets_end_check(tickets)
    assert check.verdict == "PASS"
    assert "1 ORDERED" in check.detail


@pytest.mark.parametrize(
    ("ticket", "told"),
    [
        (_ticket("u9", 9, ended="STUCK", final="WAITING"), "ended STUCK"),
        (_ticket("u9", 9, admitted=1.0, ended="REFUSED:admission-token-invalid"), "ended REFUSED"),
        (_ticket("u9", 9, ended="LEFT"), "ended LEFT"),
        (_ticket("u9", 9, ended="ERROR", final=None), "ended ERROR"),
        # Told SOLD_OUT, but the service went on with the ticket.
        (_ticket("u9", 9, final="ADMITTED"), "SOLD_OUT reads ADMITTED"),
        (_ticket("u9", 9, admitted=1.0, ended="ORDERED", final="ADMITTED"), "ORDERED reads"),
    ],
)
def test_a_ticket_that_ends_otherwise_fails(ticket: TicketEnd, told: str) -> None:
    tickets = [_ticket("u1", 0, admitted=0.0, ended="ORDERED"), _ticket("u2", 1), ticket]
    check = tickets_end_check(tickets)
    assert check.verdict == "FAIL"
    assert told in check.detail


def test_a_drop_in_which_nobody_was_told_sold_out_fails() -> None:
    check = tickets_end_check([_ticket("u1", 0, admitted=0.0, ended="ORDERED")])
    assert check.verdict == "FAIL"
    assert "did not outnumber the stock" in check.detail
    assert tickets_end_check([]).verdict == "FAIL"


def test_rank_correlation_is_one_for_the_same_order_and_shares_ties() -> None:
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # Admitted in two batches: the first two together, then the last two.
    assert rank_correlation([1, 2, 3, 4], [0, 0, 1, 1]) == pytest.approx(math.sqrt(0.8))
    assert rank_correlation([1, 2, 3], [5, 5, 5]) == 0.0


def test_a_random_draw_passes_the_fairness_check() -> None:
    check = fair_draw_check(_fair_drop())
    assert check.verdict == "PASS", check.detail


def test_first_come_first_served_fails_the_fairness_check() -> None:
    fifo = [
        _ticket(f"u{r}", r, admitted=r * 0.01, ended="ORDERED") if r < 100 else _ticket(f"u{r}", r)
        for r in range(400)
    ]
    check = fair_draw_check(fifo)
    assert check.verdict == "FAIL"
    assert "rho +0.760 beyond" in check.detail


def test_a_draw_biased_toward_early_joiners_fails() -> None:
    # Admitted by join rank plus noise: a shuffle that favours the early, not a FIFO.
    rng = random.Random(5)
    noisy = sorted(range(400), key=lambda r: r + rng.gauss(0, 150))[:100]
    biased = [
        _ticket(f"u{r}", r, admitted=noisy.index(r) * 0.01, ended="ORDERED")
        if r in noisy
        else _ticket(f"u{r}", r)
        for r in range(400)
    ]
    assert fair_draw_check(biased).verdict == "FAIL"


def test_a_late_joiner_admitted_while_early_ones_wait_fails() -> None:
    tickets = [*_fair_drop(), _ticket("late", 400, admitted=0.5, ended="ORDERED", late=True)]
    check = fair_draw_check(tickets)
    assert check.verdict == "FAIL"
    assert "late joiners admitted" in check.detail
    assert "admitted before an early one" in check.detail


def test_late_joiners_behind_everyone_pass() -> None:
    early = [
        _ticket(f"u{r}", r, admitted=(r * 7 % 100) * 0.01, ended="ORDERED") for r in range(100)
    ]
    late = [_ticket("late", 100, admitted=2.0, ended="ORDERED", late=True)]
    assert fair_draw_check([*early, *late]).verdict == "PASS"


def test_too_few_admissions_say_nothing_about_the_draw() -> None:
    assert fair_draw_check(_fair_drop(admitted=5)).verdict == "FAIL"


def test_admissions_at_the_configured_pace_pass() -> None:
    # 100/s in batches of 25 every 0.25 s.
    tickets = [_ticket(f"u{i}", i, admitted=(i // 25) * 0.25, ended="ORDERED") for i in range(300)]
    check = admission_pace_check(tickets, 100.0, tick_s=0.25)
    assert check.verdict == "PASS", check.detail
    assert admissions_per_second([t.admitted_until for t in tickets if t.admitted_until]) == (
        pytest.approx(299 / 2.75)
    )


def test_letting_the_crowd_in_at_once_fails_the_pace() -> None:
    tickets = [_ticket(f"u{i}", i, admitted=0.0, ended="ORDERED") for i in range(300)]
    check = admission_pace_check(tickets, 100.0, tick_s=0.25)
    assert check.verdict == "FAIL"
    assert "at most 300 admissions in 1 s" in check.detail


def test_the_pace_is_not_judged_without_a_rate_or_enough_admissions() -> None:
    assert admission_pace_check(_fair_drop(), None, tick_s=0.25).verdict == "SKIP"
    assert admission_pace_check([_ticket("u1", 0)], 100.0, tick_s=0.25).verdict == "FAIL"
    # 100 admitted at once, but a second may hold 151 at 100/s: nothing to tell.
    assert admission_pace_check(_fair_drop(), 100.0, tick_s=0.25).verdict == "SKIP"


def test_the_bound_allows_two_ticks_beyond_the_rate() -> None:
    assert admission_bound(100.0, 0.25) == 151
    assert admission_bound(20.0, 0.25) == 31


def test_a_queue_that_keeps_the_orders_fast_beside_a_crowd_that_does_not_passes() -> None:
    within, beyond = drop_pace_checks(_side(900.0), _side(20.0), 100.0)
    assert (within.verdict, beyond.verdict) == ("PASS", "PASS")


def test_slow_or_failing_orders_with_the_queue_fail() -> None:
    assert drop_pace_checks(_side(900.0), _side(150.0), 100.0)[0].verdict == "FAIL"
    assert drop_pace_checks(_side(900.0), _side(20.0, failed=1), 100.0)[0].verdict == "FAIL"
    assert drop_pace_checks(_side(900.0), _side(20.0, accepted=0), 100.0)[0].verdict == "FAIL"


def test_a_crowd_the_service_absorbs_shows_nothing_and_fails() -> None:
    beyond = drop_pace_checks(_side(40.0), _side(20.0), 100.0)[1]
    assert beyond.verdict == "FAIL"
    assert "a larger --requests" in beyond.detail
    # Overloaded: the deadline answered for it.
    assert drop_pace_checks(_side(40.0, deadline=3), _side(20.0), 100.0)[1].verdict == "PASS"


def test_peak_in_flight_counts_overlapping_order_calls_only() -> None:
    samples = Samples()
    for start, end, kind in [(0, 3, ORDER), (1, 2, ORDER), (1.5, 4, ORDER), (0, 9, QUEUE_POLL)]:
        samples.add(job=0, intended=start, start=start, end=end, status=201, kind=kind)
    assert peak_in_flight(samples) == 3


def test_problem_type_is_the_last_segment() -> None:
    assert problem_type({"type": "https://flashorder.dev/problems/sold-out"}) == "sold-out"
    assert problem_type({"type": "urn:flashorder:problem:sold-out"}) == "sold-out"
    assert problem_type(None) == "unknown"


def test_the_drop_is_tabled_side_by_side_and_written_to_the_results() -> None:
    queued = replace(
        _side(20.0),
        name="with the queue",
        wait=Latency.of([1.0, 2.0, 4.0]),
        admitted=3,
        admitted_per_s=99.5,
        sold_out_notice=Latency.of([0.2]),
        endings={"SOLD_OUT": 90, "ORDERED": 10},
    )
    outcome = DropOutcome(
        replace(_side(900.0), name="without the queue"), queued, 100.0, _fair_drop(30, 20)
    )
    result = StrategyResult("reserve", "http://127.0.0.1:1", drop=outcome)
    orders, queue = drop_tables([result])
    assert "without the queue" in orders
    assert "| 900.0 " in orders
    assert "SOLD_OUT 90, ORDERED 10" in queue
    assert "| 4.00 " in queue  # the wait's p99, in seconds
    written = orjson.loads(dumps({"strategies": [result]}))
    drop = written["strategies"][0]["drop"]
    assert drop["queued"]["admitted_per_s"] == 99.5
    admitted = [t for t in drop["tickets"] if t[5] is not None]
    assert len(admitted) == 20
    assert admitted[0][5].startswith("2026-12-02T14:00")
