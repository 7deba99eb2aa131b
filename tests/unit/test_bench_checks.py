"""The bench's checks on a given write model and set of answers (no stores): each passes
on a sound run and fails on a broken one, and none passes on nothing."""

from __future__ import annotations

from collections import Counter

import pytest

from flashorder_bench import checks
from flashorder_bench.answers import Answers
from flashorder_bench.checks import events_check, limit_check, stock_checks
from flashorder_bench.kafka_events import CreatedEvents
from flashorder_bench.samples import ORDER, Samples
from flashorder_bench.scenarios import Call, Job
from flashorder_bench.stores import OrderRow, ProductRow, ReadModel, WriteModel

EMPTY = WriteModel({}, {}, {})


def _model(
    *orders: tuple[str, str, str, int], stock: int = 10, limit: int | None = 4
) -> WriteModel:
    sold = sum(q for _, _, status, q in orders if status == "CREATED")
    return WriteModel(
        products={"P1": ProductRow(stock, stock - sold, limit)},
        orders={o: OrderRow(user, status, 1) for o, user, status, _ in orders},
        items={o: [("P1", q)] for o, _, _, q in orders},
    )


def _answers(
    *accepted: tuple[str, int, str | None],
    status: int = 409,
    took: float = 0.1,
    deadline_s: float | None = None,
) -> Answers:
    """Answers of order calls: (order id or "" for a refusal with ``status``, quantity, key),
    each ``took`` seconds; ``deadline_s`` folds them as an open-loop step."""
    jobs = [
        Job((Call(ORDER, "POST", "/", b"", "u", key, "P1", quantity),))
        for _, quantity, key in accepted
    ]
    samples = Samples()
    for n, (order_id, _, _) in enumerate(accepted):
        samples.add(
            job=n,
            intended=0.0,
            start=0.0,
            end=took,
            status=201 if order_id else status,
            kind=ORDER,
            order_id=order_id or None,
        )
    answers = Answers()
    answers.add(jobs, samples, deadline_s=deadline_s)
    return answers


def test_stock_checks_pass_when_everything_balances() -> None:
    model = _model(("o1", "u1", "CREATED", 2), ("o2", "u2", "CANCELLED", 1))
    checks = stock_checks(model, _answers(("o1", 2, None), ("", 1, None)))
    assert [c.verdict for c in checks] == ["PASS", "PASS", "PASS"]


def test_an_oversold_product_fails_the_first_promise() -> None:
    model = _model(("o1", "u1", "CREATED", 2), ("o2", "u2", "CREATED", 2), stock=3)
    over, balance, committed = stock_checks(model, _answers(("o1", 2, None), ("o2", 2, None)))
    assert over.verdict == "FAIL"
    assert "4 accepted / 4 sold of 3" in over.detail
    # available was computed as 3 - 4 = -1: the balance check fails too.
    assert balance.verdict == "FAIL"
    assert committed.verdict == "PASS"


def test_an_accepted_order_missing_from_the_database_fails() -> None:
    model = _model(("o1", "u1", "CREATED", 1))
    *_, committed = stock_checks(model, _answers(("o1", 1, None), ("o9", 1, None)))
    assert committed.verdict == "FAIL"
    assert "o9" in committed.detail


def test_limit_check_counts_live_orders_only() -> None:
    held = _model(
        ("o1", "u1", "CREATED", 2), ("o2", "u1", "CREATED", 2), ("o3", "u1", "CANCELLED", 2)
    )
    assert limit_check(held).verdict == "PASS"
    over = _model(("o1", "u1", "CREATED", 3), ("o2", "u1", "CREATED", 2))
    assert limit_check(over).verdict == "FAIL"
    assert limit_check(_model(("o1", "u1", "CREATED", 9), limit=None)).verdict == "SKIP"


def test_each_committed_order_needs_exactly_one_created_event() -> None:
    model = _model(("o1", "u1", "CREATED", 1), ("o2", "u2", "CREATED", 1))
    created = CreatedEvents(messages=3)
    created.event_ids["o1"] = {"e1"}
    created.event_ids["o2"] = {"e2"}
    check = events_check(model, created)
    assert check.verdict == "PASS"
    # Three messages, two distinct events: one redelivery, which consumers dedupe.
    assert "1 redelivered" in check.detail
    created.event_ids["o2"].add("e3")
    assert events_check(model, created).verdict == "FAIL"


def test_an_event_for_an_order_that_never_committed_is_a_phantom() -> None:
    model = _model(("o1", "u1", "CREATED", 1))
    created = CreatedEvents(messages=2)
    created.event_ids["o1"] = {"e1"}
    created.event_ids["o-rolled-back"] = {"e2"}
    check = events_check(model, created)
    assert check.verdict == "FAIL"
    assert "unknown order o-rolled-back" in check.detail


def test_answers_fold_retries_by_key() -> None:
    answers = _answers(("o1", 1, "k1"), ("o1", 1, "k1"), ("", 1, "k2"), ("o2", 1, "k2"))
    assert answers.key_orders == {"k1": {"o1"}, "k2": {"o2"}}
    assert answers.accepted_units == {"P1": 2}
    assert answers.retry_outcomes() == {"201+201": 1, "409+201": 1}


def test_every_check_fails_when_the_run_left_nothing_to_check() -> None:
    nothing = Answers()
    assert {c.verdict for c in stock_checks(EMPTY, nothing)} == {"FAIL"}
    assert checks.sold_out_check(EMPTY, nothing, []).verdict == "FAIL"
    assert checks.floor_check([]).verdict == "FAIL"
    assert checks.gate_check(EMPTY, {}).verdict == "FAIL"
    assert limit_check(EMPTY).verdict == "FAIL"
    assert checks.idempotency_check(EMPTY, nothing, Counter()).verdict == "FAIL"
    assert events_check(EMPTY, CreatedEvents()).verdict == "FAIL"
    assert checks.read_model_check(EMPTY, ReadModel({}, {})).verdict == "FAIL"
    # Products but not one accepted order: "every accepted order is committed" holds of
    # nothing, so it fails.
    *_, committed = stock_checks(_model(), nothing)
    assert committed.verdict == "FAIL"


def test_a_hot_sale_that_did_not_sell_out_fails() -> None:
    sold_out = _model(("o1", "u1", "CREATED", 2), ("o2", "u2", "CREATED", 1), stock=3)
    answers = _answers(("o1", 2, None), ("o2", 1, None), ("", 1, None))
    assert checks.sold_out_check(sold_out, answers, ["P1"]).verdict == "PASS"
    # Every order refused: nothing oversold, and yet the sale failed.
    refused = _model(stock=3)
    check = checks.sold_out_check(refused, _answers(("", 1, None), ("", 2, None)), ["P1"])
    assert check.verdict == "FAIL"
    assert "3 of 3 still available, 0 units accepted" in check.detail
    # Sold out in the database while the answers accepted fewer units: undersold answers.
    check = checks.sold_out_check(sold_out, _answers(("o1", 2, None)), ["P1"])
    assert check.verdict == "FAIL"
    # A hot product the database does not hold.
    assert checks.sold_out_check(sold_out, answers, ["P9"]).verdict == "FAIL"


def test_a_phase_below_its_floor_of_accepted_orders_fails() -> None:
    sale = checks.sale_floor("hot", accepted=2_500, stock=5_000)
    ample = checks.ample_floor("many", accepted=900, order_calls=1_000)
    assert checks.floor_check([sale, ample]).verdict == "PASS"
    starved = checks.sale_floor("hot", accepted=2_499, stock=5_000)
    assert checks.floor_check([starved, ample]).verdict == "FAIL"
    refused = checks.ample_floor("many", accepted=899, order_calls=1_000)
    check = checks.floor_check([sale, refused])
    assert check.verdict == "FAIL"
    assert "many: 899 accepted < 900" in check.detail
    # Nothing accepted of nothing asked still misses a floor of one.
    assert checks.floor_check([checks.ample_floor("w", 0, 0)]).verdict == "FAIL"


def test_the_gate_must_count_what_the_database_has_available() -> None:
    model = _model(("o1", "u1", "CREATED", 2))
    assert checks.gate_check(model, {"P1": 8}).verdict == "PASS"
    assert checks.gate_check(model, {"P1": 9}).verdict == "FAIL"
    # A gate that lost the product (Redis emptied) is not a gate that agrees.
    assert checks.gate_check(model, {}).verdict == "FAIL"


def test_one_order_per_idempotency_key() -> None:
    model = _model(("o1", "u1", "CREATED", 1), ("o2", "u2", "CREATED", 1))
    answers = _answers(("o1", 1, "k1"), ("o1", 1, "k1"), ("o2", 1, "k2"))
    assert checks.idempotency_check(model, answers, Counter(o1=1, o2=1)).verdict == "PASS"
    # One key answered with two orders.
    split = _answers(("o1", 1, "k1"), ("o2", 1, "k1"))
    assert checks.idempotency_check(model, split, Counter(o1=1, o2=1)).verdict == "FAIL"
    # An order with no idempotency record, or with two.
    assert checks.idempotency_check(model, answers, Counter(o1=1)).verdict == "FAIL"
    assert checks.idempotency_check(model, answers, Counter(o1=2, o2=1)).verdict == "FAIL"


def test_the_read_model_must_equal_the_write_model() -> None:
    model = _model(("o1", "u1", "CREATED", 2), ("o2", "u2", "CANCELLED", 1))
    views = {"o1": OrderRow("u1", "CREATED", 1), "o2": OrderRow("u2", "CANCELLED", 1)}
    assert checks.read_model_check(model, ReadModel(views, {"P1": (2, 1)})).verdict == "PASS"
    stale = {**views, "o2": OrderRow("u2", "CREATED", 1)}
    assert checks.read_model_check(model, ReadModel(stale, {"P1": (2, 1)})).verdict == "FAIL"
    missing = {"o1": views["o1"]}
    assert checks.read_model_check(model, ReadModel(missing, {"P1": (2, 1)})).verdict == "FAIL"
    assert checks.read_model_check(model, ReadModel(views, {"P1": (3, 2)})).verdict == "FAIL"


def test_the_drain_needs_a_live_projector_when_the_stack_has_kafka() -> None:
    assert checks.drained_check(True, 2.0, 1, needed=True).verdict == "PASS"
    # Lag 0 with no projector reporting: only the outbox was counted.
    assert checks.drained_check(True, 2.0, 0, needed=True).verdict == "FAIL"
    assert checks.drained_check(True, 2.0, 0, needed=False).verdict == "PASS"
    assert checks.drained_check(False, 600.0, 1, needed=True).verdict == "FAIL"


def test_a_check_that_cannot_run_fails_unless_skipped() -> None:
    check = checks.unavailable("gate", "FLASHORDER_REDIS_URL is not set", (), "gate")
    assert check.verdict == "FAIL"
    assert "--skip-check gate" in check.detail
    assert checks.unavailable("gate", "no Redis", ("gate",), "gate").verdict == "SKIP"


@pytest.mark.parametrize(
    ("status", "took", "failed"),
    [
        (503, 15.0, False),  # the request deadline's 503: the step shed load
        (503, 0.2, True),  # a 503 before the deadline is not the deadline's
        (500, 0.2, True),
        (502, 20.0, True),
        (409, 0.1, False),
    ],
)
def test_open_loop_5xx_other_than_the_deadline_503_fail(
    status: int, took: float, failed: bool
) -> None:
    answers = _answers(("", 1, None), status=status, took=took, deadline_s=15.0)
    (*_, open_loop) = checks.answer_checks(answers, open_loop=True)
    assert (open_loop.verdict == "FAIL") is failed
    assert answers.deadline_answers == (status == 503 and not failed)


def test_closed_loop_5xx_and_transport_errors_fail() -> None:
    assert {
        c.verdict for c in checks.answer_checks(_answers(("o1", 1, None)), open_loop=False)
    } == {"PASS"}
    five, _ = checks.answer_checks(_answers(("", 1, None), status=503), open_loop=False)
    assert five.verdict == "FAIL"
    _, transport = checks.answer_checks(_answers(("", 1, None), status=0), open_loop=False)
    assert transport.verdict == "FAIL"
