"""The bench's promise checks on a given write model and set of answers (no stores)."""

from __future__ import annotations

from flashorder.bench.answers import Answers
from flashorder.bench.checks import WriteModel, events_check, limit_check, stock_checks
from flashorder.bench.kafka_events import CreatedEvents
from flashorder.bench.samples import ORDER, Samples
from flashorder.bench.scenarios import Call, Job


def _model(
    *orders: tuple[str, str, str, int], stock: int = 10, limit: int | None = 4
) -> WriteModel:
    sold = sum(q for _, _, status, q in orders if status == "CREATED")
    return WriteModel(
        stock={"P1": (stock, stock - sold, limit)},
        orders={o: (user, status, 1) for o, user, status, _ in orders},
        lines=[(o, "P1", q) for o, _, _, q in orders],
    )


def _answers(*accepted: tuple[str, int, str | None]) -> Answers:
    """Answers of order calls: (order id or "" for a refusal, quantity, key)."""
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
            end=0.1,
            status=201 if order_id else 409,
            kind=ORDER,
            order_id=order_id or None,
        )
    answers = Answers()
    answers.add(jobs, samples)
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
