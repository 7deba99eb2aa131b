"""The PNG report: the strategies side by side, on matplotlib's Agg backend (no display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

# Before pyplot is imported: no display here, and none needed.
matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from flashorder_bench.run import StrategyResult

COLOURS = {"reserve": "tab:blue", "lock": "tab:red", "ceiling": "tab:gray"}


def _colour(name: str) -> str:
    return COLOURS.get(name, "tab:green")


def render(
    results: Sequence[StrategyResult], path: Path, *, title: str, p99_limit_ms: float
) -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    fig.suptitle(title)
    _throughput(axes[0][0], results)
    _latency(axes[0][1], results)
    _stock(axes[1][0], results)
    _open_loop(axes[1][1], results, p99_limit_ms)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _throughput(ax: Axes, results: Sequence[StrategyResult]) -> None:
    for r in results:
        if not r.closed:
            continue
        s = r.closed[0].series
        times = [i * s.bucket_s for i in range(len(s.answers))]
        ax.plot(
            times,
            [n / s.bucket_s for n in s.accepted],
            color=_colour(r.strategy),
            label=f"{r.strategy}: accepted orders/s",
        )
        ax.plot(
            times,
            [n / s.bucket_s for n in s.answers],
            color=_colour(r.strategy),
            linestyle=":",
            label=f"{r.strategy}: answers/s",
        )
    ax.set_title("Throughput over time (closed loop, run 1)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("per second")
    _legend(ax)
    ax.grid(alpha=0.3)


def _latency(ax: Axes, results: Sequence[StrategyResult]) -> None:
    labels = ("p50", "p90", "p99", "p99.9", "max")
    bars: list[tuple[str, list[float]]] = []
    for r in results:
        if r.closed:
            lat = r.closed[0].stats.order_latency
            bars.append((r.strategy, [lat.p50, lat.p90, lat.p99, lat.p999, lat.max]))
    ceiling = next((r.ceiling for r in results if r.ceiling is not None), None)
    if ceiling is not None:
        lat = ceiling.stats.latency
        bars.append(("ceiling", [lat.p50, lat.p90, lat.p99, lat.p999, lat.max]))
    width = 0.8 / max(1, len(bars))
    for n, (name, values) in enumerate(bars):
        xs = [i + n * width for i in range(len(labels))]
        ax.bar(xs, values, width, label=name, color=_colour(name))
    ax.set_xticks([i + width * (len(bars) - 1) / 2 for i in range(len(labels))], labels)
    ax.set_yscale("log")
    ax.set_ylabel("ms (log)")
    ax.set_title("Order latency, closed loop run 1 (ceiling: echo route)")
    _legend(ax)
    ax.grid(alpha=0.3, axis="y")


def _stock(ax: Axes, results: Sequence[StrategyResult]) -> None:
    for r in results:
        if r.closed and r.closed[0].stock:
            points = r.closed[0].stock
            ax.step(
                [t for t, _ in points],
                [v for _, v in points],
                where="post",
                color=_colour(r.strategy),
                label=r.strategy,
            )
    ax.set_title("Available stock of the (first) product over time, run 1")
    ax.set_xlabel("seconds")
    ax.set_ylabel("available")
    _legend(ax)
    ax.grid(alpha=0.3)


def _open_loop(ax: Axes, results: Sequence[StrategyResult], p99_limit_ms: float) -> None:
    for r in results:
        if r.open_steps:
            rates = [s.rate or 0.0 for s in r.open_steps]
            ax.plot(
                rates,
                [s.stats.latency.p99 for s in r.open_steps],
                marker="o",
                color=_colour(r.strategy),
                label=f"{r.strategy} p99",
            )
            ax.plot(
                rates,
                [s.stats.latency.p50 for s in r.open_steps],
                marker=".",
                linestyle=":",
                color=_colour(r.strategy),
                label=f"{r.strategy} p50",
            )
    ax.axhline(
        p99_limit_ms,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"p99 limit {p99_limit_ms:g} ms",
    )
    ax.set_yscale("log")
    ax.set_title("Open loop: latency from the intended send time")
    ax.set_xlabel("offered calls/s")
    ax.set_ylabel("ms (log)")
    _legend(ax)
    ax.grid(alpha=0.3)


def _legend(ax: Axes) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
