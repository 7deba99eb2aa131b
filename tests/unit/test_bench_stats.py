"""Percentiles and phase figures of the bench, from raw samples."""

from __future__ import annotations

import math

import pytest

from flashorder_bench.phase import PhaseRecord
from flashorder_bench.run import StrategyResult
from flashorder_bench.samples import ECHO, GET_PRODUCT, ORDER, TRANSPORT_ERROR, Samples
from flashorder_bench.stats import Latency, percentile, phase_stats, series
from flashorder_bench.summary import open_table


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0.1) == 1.0


def test_p999_of_a_thousand_samples_is_the_999th_not_the_max() -> None:
    values = [float(v) for v in range(1, 1001)]
    # 99.9% of 1000 is 999 in exact arithmetic but 998.99... in floating point.
    assert percentile(values, 99.9) == 999.0


def test_percentile_of_one_sample_is_that_sample() -> None:
    assert percentile([7.0], 50) == 7.0
    assert percentile([7.0], 99.9) == 7.0


@pytest.mark.parametrize("p", [0.0, -1.0, 100.5])
def test_percentile_refuses_a_rank_outside_zero_to_hundred(p: float) -> None:
    with pytest.raises(ValueError, match="not in"):
        percentile([1.0, 2.0], p)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_latency_is_in_milliseconds_and_sorts_its_input() -> None:
    lat = Latency.of([0.003, 0.001, 0.002, 0.010])
    assert lat.count == 4
    assert lat.p50 == pytest.approx(2.0)
    assert lat.max == pytest.approx(10.0)
    assert lat.mean == pytest.approx(4.0)


def test_latency_of_no_samples_is_nan_not_zero() -> None:
    lat = Latency.of([])
    assert lat.count == 0
    assert math.isnan(lat.p99)


def _samples(*calls: tuple[float, float, int, int]) -> Samples:
    s = Samples()
    for n, (start, end, status, kind) in enumerate(calls):
        s.add(job=n, intended=start, start=start, end=end, status=status, kind=kind)
    return s


def test_phase_counts_accepted_orders_until_the_last_acceptance() -> None:
    s = _samples(
        (0.0, 0.5, 201, ORDER),
        (0.0, 1.0, 201, ORDER),
        (0.5, 3.0, 409, ORDER),
        (1.0, 4.0, 200, GET_PRODUCT),
    )
    st = phase_stats(s)
    assert st.calls == 4
    assert st.order_calls == 3
    assert st.accepted == 2
    # Two accepted in the first second: the sell-out rate, not diluted by later refusals.
    assert st.accepted_per_s == pytest.approx(2.0)
    assert st.busy_s == pytest.approx(4.0)
    assert st.answers_per_s == pytest.approx(1.0)
    assert st.statuses == {"200": 1, "201": 2, "409": 1}


def test_phase_separates_server_errors_from_transport_errors() -> None:
    s = _samples((0.0, 1.0, 503, ORDER), (0.0, 1.0, TRANSPORT_ERROR, ORDER), (0.0, 1.0, 201, ECHO))
    st = phase_stats(s)
    assert st.server_errors == 1
    assert st.transport_errors == 1
    assert st.statuses["error"] == 1


def test_open_loop_latency_counts_from_when_the_call_was_due() -> None:
    s = Samples()
    # Due at 0, sent late at 0.4 (the generator or a queue held it), answered at 0.5.
    s.add(job=0, intended=0.0, start=0.4, end=0.5, status=201, kind=ORDER)
    st = phase_stats(s)
    assert st.latency.max == pytest.approx(500.0)
    assert st.send_lag.max == pytest.approx(400.0)


def test_empty_phase_has_zero_rates() -> None:
    st = phase_stats(Samples())
    assert st.calls == 0
    assert st.accepted_per_s == 0.0


def test_series_buckets_answers_by_when_they_finished() -> None:
    s = _samples((0.0, 0.2, 201, ORDER), (0.0, 0.7, 409, ORDER), (0.0, 1.2, 201, ORDER))
    got = series(s, bucket_s=0.5)
    assert got.answers == [1, 1, 1]
    assert got.accepted == [1, 0, 1]


def test_open_loop_table_shows_the_accepted_orders_latency_apart() -> None:
    # A hot step: three fast refusals and two slow acceptances, all due at t = 0.
    samples = Samples()
    for i, (status, took) in enumerate([(201, 0.120), (201, 0.080), (409, 0.002), (409, 0.003),
                                        (409, 0.002)]):  # fmt: skip
        samples.add(job=i, intended=0.0, start=0.0, end=took, status=status, kind=ORDER)
    step = PhaseRecord("open 50/s", "open", 50.0, phase_stats(samples), series(samples))
    table = open_table([StrategyResult("reserve", "http://x", open_steps=[step])], 100.0)
    header, _, row = table.splitlines()
    cells = dict(zip(_cells(header), _cells(row), strict=True))
    assert cells["accepted"] == "2"
    assert cells["accepted p50 ms"] == "80.0"
    assert cells["accepted p99 ms"] == "120.0"
    assert cells["p50 ms"] == "3.0"
    assert cells["p99 <= 100 ms"] == "no"


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split("|")]
