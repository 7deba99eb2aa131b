"""The open-loop schedule of the bench: due times, shares, the rate ladder."""

from __future__ import annotations

import pytest

from flashorder_bench.schedule import (
    Step,
    best_rate,
    due_offsets,
    next_rate,
    rate_ladder,
    share,
    should_stop,
)


def test_calls_are_due_evenly_at_the_rate() -> None:
    assert due_offsets(4, 2.0) == [0.0, 0.5, 1.0, 1.5]


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        due_offsets(3, 0.0)


def test_shares_interleave_and_cover_every_call_once() -> None:
    parts = [list(share(10, 3, i)) for i in range(3)]
    assert parts[0] == [0, 3, 6, 9]
    assert sorted(i for p in parts for i in p) == list(range(10))


def test_each_share_keeps_its_rate_over_the_whole_step() -> None:
    # Two processes at 100/s in all: each sends every 20 ms, offset by 10 ms.
    offsets = due_offsets(6, 100.0)
    assert [offsets[i] for i in share(6, 2, 1)] == pytest.approx([0.01, 0.03, 0.05])


def test_share_refuses_a_generator_that_does_not_exist() -> None:
    with pytest.raises(ValueError, match="generator"):
        share(10, 2, 2)


def test_ladder_climbs_in_fractions_of_the_peak_with_two_figures() -> None:
    assert rate_ladder(1234.0, (0.5, 1.0, 1.5)) == [620.0, 1200.0, 1900.0]


def test_ladder_of_a_tiny_peak_still_has_a_rate() -> None:
    assert rate_ladder(0.5) == [1.0]


def test_best_rate_is_the_highest_that_held() -> None:
    steps = [Step(100, 20.0, 0), Step(200, 90.0, 0), Step(300, 150.0, 0), Step(250, 80.0, 2)]
    assert best_rate(steps, 100.0) == 200


def test_best_rate_is_none_when_nothing_held() -> None:
    assert best_rate([Step(100, 500.0, 0)], 100.0) is None


def test_ladder_stops_after_two_misses_in_a_row() -> None:
    held, missed = Step(100, 10.0, 0), Step(200, 300.0, 0)
    assert not should_stop([held, missed], 100.0)
    assert should_stop([held, missed, missed], 100.0)
    assert not should_stop([missed, held], 100.0)


def test_the_search_climbs_the_planned_rates_until_two_misses() -> None:
    planned = [100.0, 200.0, 300.0, 400.0]
    assert next_rate(planned, [], 100.0) == 100.0
    steps = [Step(100, 10.0, 0)]
    assert next_rate(planned, steps, 100.0) == 200.0
    steps += [Step(200, 150.0, 0), Step(300, 400.0, 0)]
    # The climb is over; the gap between 100 (held) and 200 (failed) is narrowed next.
    assert next_rate(planned, steps, 100.0) == 140.0


def test_the_search_ends_with_the_plan() -> None:
    steps = [Step(100, 10.0, 0), Step(200, 20.0, 0)]
    assert next_rate([100.0, 200.0], steps, 100.0) is None


def test_the_search_halves_below_the_plan_when_nothing_held() -> None:
    planned = [40.0, 80.0, 120.0]
    steps = [Step(40, 300.0, 0), Step(80, 900.0, 0)]
    assert next_rate(planned, steps, 100.0) == 20.0
    steps.append(Step(20, 150.0, 0))
    assert next_rate(planned, steps, 100.0) == 10.0
    steps.append(Step(10, 50.0, 0))
    assert next_rate(planned, steps, 100.0) == 14.0  # then narrowed between 10 and 20
    steps.append(Step(14, 500.0, 0))
    assert best_rate(steps, 100.0) == 10


def test_the_descent_gives_up_after_three_halvings() -> None:
    steps = [Step(40, 300.0, 0), Step(80, 900.0, 0)]
    steps += [Step(20, 200.0, 0), Step(10, 200.0, 0), Step(5, 200.0, 0)]
    assert next_rate([40.0, 80.0], steps, 100.0) is None


def test_the_search_narrows_the_gap_between_held_and_failed_rates() -> None:
    planned = [340.0, 670.0, 1000.0]
    steps = [Step(340, 270.0, 0), Step(670, 1200.0, 0), Step(170, 60.0, 0)]
    assert next_rate(planned, steps, 100.0) == 240.0  # between 170 (held) and 340 (failed)
    steps.append(Step(240, 80.0, 0))
    assert next_rate(planned, steps, 100.0) == 290.0
    steps.append(Step(290, 130.0, 0))
    assert next_rate(planned, steps, 100.0) is None  # the two refinements are spent
    assert best_rate(steps, 100.0) == 240


def test_no_refinement_when_the_gap_is_small_or_nothing_failed_above() -> None:
    steps = [Step(100, 10.0, 0), Step(120, 300.0, 0), Step(140, 400.0, 0)]
    assert next_rate([100.0, 120.0, 140.0], steps, 100.0) is None
    steps = [Step(100, 10.0, 0), Step(200, 20.0, 0)]
    assert next_rate([100.0, 200.0], steps, 100.0) is None
