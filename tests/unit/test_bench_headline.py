"""The bench's headline: the figures it compares within one run."""

from __future__ import annotations

from dataclasses import replace

from flashorder_bench.phase import PhaseRecord
from flashorder_bench.run import StrategyResult
from flashorder_bench.stats import Latency, PhaseStats, Series
from flashorder_bench.summary import headline, headline_lines

NO_LATENCY = Latency.of([])


def phase(name: str, *, calls_per_s: float, accepted_per_s: float) -> PhaseRecord:
    stats = PhaseStats(
        1000, 1.0, calls_per_s, 1000, calls_per_s, 100, accepted_per_s, {}, 0, 0,
        NO_LATENCY, NO_LATENCY, NO_LATENCY, NO_LATENCY,
    )  # fmt: skip
    return PhaseRecord(name, "closed", None, stats, Series(0.5, [], []))


def test_the_selling_regime_is_reported_against_the_echo_ceiling() -> None:
    # A hot sale: the calls (mostly cheap refusals) outrun the echo, the selling does not.
    reserve = StrategyResult("reserve", "http://x")
    reserve.closed = [phase("run", calls_per_s=5000, accepted_per_s=1500)]
    reserve.ceiling = phase("echo", calls_per_s=4000, accepted_per_s=4000)
    lock = replace(reserve, strategy="lock", ceiling=None)
    lock.closed = [phase("run", calls_per_s=300, accepted_per_s=250)]

    h = headline([reserve, lock])

    assert h.ceiling_share == 5000 / 4000
    assert h.selling_share == 1500 / 4000
    assert h.accepted_ratio == 1500 / 250
    assert "default accepted orders/s (the selling regime) ÷ echo ceiling: 38%" in (
        headline_lines(h, [reserve, lock])
    )


def test_without_a_ceiling_there_is_no_share() -> None:
    reserve = StrategyResult("reserve", "http://x")
    reserve.closed = [phase("run", calls_per_s=5000, accepted_per_s=1500)]
    h = headline([reserve])
    assert h.ceiling_share is None
    assert h.selling_share is None
