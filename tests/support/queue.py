"""Statistics that tell a fair draw from a FIFO line or a biased shuffle.

Both take the admission ranks (0-based) listed in join order: ``ranks[i]`` is where the
buyer who joined i-th was admitted.
"""

from __future__ import annotations

from collections.abc import Sequence


def rank_correlation(ranks: Sequence[int]) -> float:
    """Spearman's rho between the join order and the admission order (ranks without ties):
    1 for FIFO, -1 for LIFO, about 0 +- 1/sqrt(n) for a fair draw."""
    n = len(ranks)
    d2 = sum((i - r) ** 2 for i, r in enumerate(ranks))
    return 1 - 6 * d2 / (n * (n * n - 1))


def uniformity_chi_square(ranks: Sequence[int], bins: int = 10) -> float:
    """Pearson's chi-square of the bins x bins table (join decile, admission decile): a fair
    draw spreads each join decile evenly over the admission deciles. (bins - 1)^2 degrees of
    freedom: 81 for deciles, whose 0.001 critical value is 124.8."""
    n = len(ranks)
    counts = [[0] * bins for _ in range(bins)]
    for i, r in enumerate(ranks):
        counts[i * bins // n][r * bins // n] += 1
    rows = [sum(row) for row in counts]
    cols = [sum(counts[i][j] for i in range(bins)) for j in range(bins)]
    chi2 = 0.0
    for i in range(bins):
        for j in range(bins):
            expected = rows[i] * cols[j] / n
            chi2 += (counts[i][j] - expected) ** 2 / expected
    return chi2
