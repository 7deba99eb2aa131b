"""The fairness checks of the waiting room's draw test would catch an unfair line."""

from __future__ import annotations

import random

from flashorder.domain.queue import draw_score
from tests.support.queue import rank_correlation, uniformity_chi_square

N = 10_000
CRITICAL_CHI2 = 124.8


def test_a_fifo_line_fails_both_checks() -> None:
    fifo = list(range(N))

    assert rank_correlation(fifo) == 1.0
    assert uniformity_chi_square(fifo) > CRITICAL_CHI2


def test_a_shuffle_biased_toward_early_joiners_fails_the_checks() -> None:
    # Shuffled within blocks of a thousand: locally random, early joiners still first.
    rng = random.Random(7)
    blocks = [list(range(b, b + 1000)) for b in range(0, N, 1000)]
    for block in blocks:
        rng.shuffle(block)
    biased = [r for block in blocks for r in block]
    # A gentler bias: each joiner's place drawn around their join index.
    noisy = sorted(range(N), key=lambda i: i + rng.gauss(0, 3000))
    ranks = [0] * N
    for rank, i in enumerate(noisy):
        ranks[i] = rank

    assert rank_correlation(biased) > 0.9
    assert uniformity_chi_square(biased) > CRITICAL_CHI2
    assert rank_correlation(ranks) > 0.5
    assert uniformity_chi_square(ranks) > CRITICAL_CHI2


def test_the_seeded_draw_passes_both() -> None:
    users = [f"buyer-{i:05d}" for i in range(N)]
    drawn = sorted(range(N), key=lambda i: draw_score("audit-seed", users[i]))
    ranks = [0] * N
    for rank, i in enumerate(drawn):
        ranks[i] = rank

    assert abs(rank_correlation(ranks)) < 0.04
    assert uniformity_chi_square(ranks) < CRITICAL_CHI2
