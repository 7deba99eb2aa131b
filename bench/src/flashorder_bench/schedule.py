"""Open-loop load: when each call is due, how the calls are shared, which rates to try.

In an open loop the calls arrive at a fixed rate whatever the answers do, as buyers do: call
``i`` is due at ``i / rate`` seconds after the start, and its latency counts from then. A
service that falls behind shows it as latency instead of silently slowing the generator down
(the coordinated omission of closed loops).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def due_offsets(count: int, rate: float) -> list[float]:
    """Seconds from the start at which each of ``count`` calls is due, at ``rate`` per second."""
    if rate <= 0:
        raise ValueError("the rate must be positive")
    return [i / rate for i in range(count)]


def share(count: int, procs: int, index: int) -> range:
    """The calls (by index) that generator ``index`` of ``procs`` makes.

    Interleaved, not in blocks: in an open loop each process then sends at ``rate / procs``
    with its calls spread over the whole step, and in a closed loop every process meets the
    same mix (the hot product sells out for all of them at the same moment).
    """
    if not 0 <= index < procs:
        raise ValueError(f"generator {index} of {procs}")
    return range(index, count, procs)


def rate_ladder(
    peak: float, fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
) -> list[float]:
    """Rates to step through, as fractions of a closed-loop peak, rounded to two significant
    figures (readable in a table), ascending and distinct."""
    rates = sorted({_two_figures(peak * f) for f in fractions if peak * f >= 1})
    return rates or [1.0]


def _two_figures(x: float) -> float:
    magnitude = 10 ** (math.floor(math.log10(x)) - 1)
    return float(round(x / magnitude) * magnitude)


@dataclass(frozen=True, slots=True)
class Step:
    """One open-loop step, as judged: ``rate`` offered, its p99 and its errors."""

    rate: float
    p99_ms: float
    errors: int

    def holds(self, p99_limit_ms: float) -> bool:
        return self.errors == 0 and self.p99_ms <= p99_limit_ms


def best_rate(steps: Sequence[Step], p99_limit_ms: float) -> float | None:
    """The highest offered rate that held (p99 within the limit, no error), or None."""
    held = [s.rate for s in steps if s.holds(p99_limit_ms)]
    return max(held) if held else None


def should_stop(steps: Sequence[Step], p99_limit_ms: float, *, misses: int = 2) -> bool:
    """Stop climbing after ``misses`` steps in a row failed: higher rates only fail worse,
    and a deep overload takes minutes to drain on two cores."""
    tail = steps[-misses:]
    return len(tail) == misses and not any(s.holds(p99_limit_ms) for s in tail)


def next_rate(
    planned: Sequence[float],
    steps: Sequence[Step],
    p99_limit_ms: float,
    *,
    misses: int = 2,
    descents: int = 3,
    refinements: int = 2,
) -> float | None:
    """The next rate to offer, or None when the search is over.

    Climb the ``planned`` rates (ascending) until ``misses`` steps in a row fail. If no step
    held by then, the service is slower than the ladder assumed: halve the lowest rate tried,
    at most ``descents`` times, until one holds. Then narrow the gap between the highest rate
    that held and the lowest that failed above it (their geometric middle), at most
    ``refinements`` times, while the failing rate is more than 25% above the holding one.
    """
    ladder = sorted(planned)
    climbed = [s for s in steps if s.rate >= ladder[0]]
    descended = [s for s in steps if s.rate < ladder[0]]
    if (
        not descended
        and len(climbed) < len(ladder)
        and not should_stop(climbed, p99_limit_ms, misses=misses)
    ):
        return ladder[len(climbed)]
    if any(s.holds(p99_limit_ms) for s in steps):
        return _refined(steps, p99_limit_ms, budget=len(ladder) + descents + refinements)
    if len(descended) >= descents:
        return None
    half = min(s.rate for s in steps) / 2
    return _two_figures(half) if half >= 1 else None


def _refined(steps: Sequence[Step], p99_limit_ms: float, *, budget: int) -> float | None:
    best = max(s.rate for s in steps if s.holds(p99_limit_ms))
    above = [s.rate for s in steps if s.rate > best and not s.holds(p99_limit_ms)]
    if not above or len(steps) >= budget or min(above) <= best * 1.25:
        return None
    middle = _two_figures(math.sqrt(best * min(above)))
    tried = {s.rate for s in steps}
    return middle if best < middle < min(above) and middle not in tried else None
