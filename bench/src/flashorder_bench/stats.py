"""Percentiles and throughput from raw samples: no histogram, no interpolation.

Percentiles are nearest-rank over every latency: p99 is the smallest latency that at least
99% of the calls did not exceed, a value that some call really had. With a few thousand
samples p99.9 rests on a handful of calls; ``count`` says how many there were.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from flashorder_bench.samples import ECHO, ORDER, TRANSPORT_ERROR, Samples

PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of ``ordered`` (sorted ascending, not empty)."""
    if not ordered:
        raise ValueError("no samples")
    if not 0.0 < p <= 100.0:
        raise ValueError(f"percentile {p} is not in (0, 100]")
    # round() first: 99.9 / 100 * 1000 is 998.9999999999999 in floating point.
    rank = math.ceil(round(p / 100.0 * len(ordered), 9))
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency figures in milliseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    mean: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        if not seconds:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
        ordered = sorted(s * 1000.0 for s in seconds)
        p50, p90, p99, p999 = (percentile(ordered, p) for p in PERCENTILES)
        return cls(len(ordered), p50, p90, p99, p999, ordered[-1], sum(ordered) / len(ordered))


@dataclass(frozen=True, slots=True)
class PhaseStats:
    """What one load phase did, from its samples.

    ``accepted_per_s`` is the rate of accepted orders (2xx answers to order calls) from the
    first send to the last acceptance: on a hot product, how fast the stock sold. ``busy_s``
    runs from the first send to the last answer.
    """

    calls: int
    busy_s: float
    answers_per_s: float
    order_calls: int
    order_calls_per_s: float
    accepted: int
    accepted_per_s: float
    statuses: dict[str, int]
    server_errors: int
    transport_errors: int
    latency: Latency
    order_latency: Latency
    accepted_latency: Latency
    #: How late calls left after they were due (open loop): the generator's own lag.
    send_lag: Latency


def phase_stats(samples: Samples) -> PhaseStats:
    n = len(samples)
    if n == 0:
        empty = Latency.of([])
        return PhaseStats(0, 0.0, 0.0, 0, 0.0, 0, 0.0, {}, 0, 0, empty, empty, empty, empty)
    first = min(samples.intended)
    busy = max(max(samples.end) - first, 1e-9)
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    order_latencies: list[float] = []
    accepted_latencies: list[float] = []
    lags: list[float] = []
    last_accept = first
    for i in range(n):
        status = samples.status[i]
        key = str(status) if status != TRANSPORT_ERROR else "error"
        statuses[key] = statuses.get(key, 0) + 1
        took = samples.end[i] - samples.intended[i]
        latencies.append(took)
        lags.append(max(0.0, samples.start[i] - samples.intended[i]))
        if samples.kind[i] in (ORDER, ECHO):
            order_latencies.append(took)
            if 200 <= status < 300:
                accepted_latencies.append(took)
                last_accept = max(last_accept, samples.end[i])
    accepted = len(accepted_latencies)
    accept_window = max(last_accept - first, 1e-9)
    return PhaseStats(
        calls=n,
        busy_s=busy,
        answers_per_s=n / busy,
        order_calls=len(order_latencies),
        order_calls_per_s=len(order_latencies) / busy,
        accepted=accepted,
        accepted_per_s=accepted / accept_window if accepted else 0.0,
        statuses=dict(sorted(statuses.items())),
        server_errors=sum(c for s, c in statuses.items() if s.isdigit() and int(s) >= 500),
        transport_errors=statuses.get("error", 0),
        latency=Latency.of(latencies),
        order_latency=Latency.of(order_latencies),
        accepted_latency=Latency.of(accepted_latencies),
        send_lag=Latency.of(lags),
    )


@dataclass(frozen=True, slots=True)
class Series:
    """Answers and accepted orders per bucket, from the phase's first send."""

    bucket_s: float
    answers: list[int]
    accepted: list[int]


def series(samples: Samples, *, bucket_s: float = 0.5) -> Series:
    if len(samples) == 0:
        return Series(bucket_s, [], [])
    first = min(samples.intended)
    buckets = int((max(samples.end) - first) / bucket_s) + 1
    answers = [0] * buckets
    accepted = [0] * buckets
    for i in range(len(samples)):
        b = int((samples.end[i] - first) / bucket_s)
        answers[b] += 1
        if samples.kind[i] in (ORDER, ECHO) and 200 <= samples.status[i] < 300:
            accepted[b] += 1
    return Series(bucket_s, answers, accepted)


def window(samples: Samples) -> tuple[float, float, float | None]:
    """When the phase's first call was due, when its last answer came, and when its last
    accepted order (or echo) was answered (None if none was): the ``time.monotonic()``
    readings that bound the phase and its selling window, as ``phase_stats`` counts them."""
    if not len(samples):
        return 0.0, 0.0, None
    accepts = [
        samples.end[i]
        for i in range(len(samples))
        if samples.kind[i] in (ORDER, ECHO) and 200 <= samples.status[i] < 300
    ]
    return min(samples.intended), max(samples.end), max(accepts, default=None)
