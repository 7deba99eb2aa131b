"""``flashorder-bench``: every strategy on the same seed data, one after the other, then the
ratios, the checks, the result file and the chart. Exit status 1 if any check failed."""

from __future__ import annotations

import logging
import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from flashorder_bench import chart, results, summary, watching
from flashorder_bench.options import BenchOptions
from flashorder_bench.report import failed, format_checks
from flashorder_bench.run import StrategyResult, run_strategy
from flashorder_bench.settings import Strategy


def _strategies(opts: BenchOptions) -> tuple[Strategy, ...]:
    if opts.target is None:
        return opts.strategies
    # A running stack has the one strategy it was started with; the bench cannot switch it.
    running = os.environ.get("FLASHORDER_STRATEGY", "reserve")
    return ("lock",) if running == "lock" else ("reserve",)


async def run_bench(opts: BenchOptions, *, console: Console | None = None) -> int:
    # Soft wrap: the tables and check lines are for copying, not for the terminal's width.
    console = console or Console(soft_wrap=True)
    # The migrations the bench runs log every DDL step and each server note; not its output.
    for noisy in ("alembic", "asyncmy"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    started = datetime.now(UTC)
    runtag = secrets.token_hex(3)
    logs = opts.out / f"{started.strftime('%Y%m%dT%H%M%S')}-logs"
    done: list[StrategyResult] = []
    for strategy in _strategies(opts):
        done.append(await run_strategy(opts, strategy, runtag, console=console, logs=logs))
        # After each strategy: a later one that breaks down leaves the earlier figures.
        path = _write(opts, started, done)

    head = summary.headline(done)
    console.print()
    console.print("[bold]Closed loop[/] (latency of order calls; ceiling: echo calls)")
    console.print(summary.closed_table(done), markup=False, highlight=False)
    if any(r.open_steps for r in done):
        console.print("\n[bold]Open loop[/] (latency from the intended send time)")
        console.print(summary.open_table(done, opts.p99_limit_ms), markup=False, highlight=False)
    if tables := summary.drop_tables(done):
        console.print("\n[bold]The drop, without and with the queue[/] (order calls; the queue)")
        for table in tables:
            console.print(table, markup=False, highlight=False)
    console.print("\n[bold]Memory[/]")
    console.print(summary.memory_table(done), markup=False, highlight=False)
    console.print("\n[bold]CPU per accepted order[/] (first closed-loop run; /proc/<pid>/stat)")
    console.print(summary.cpu_table(done), markup=False, highlight=False)
    console.print("\n[bold]The same in parts[/] (the HTTP front from the echo ceiling)")
    console.print(summary.parts_table(done), markup=False, highlight=False)
    for line in summary.connection_lines(done):
        console.print(line, markup=False, highlight=False)
    for r in done:
        if r.watch is None:
            continue
        console.print(f"\n[bold]Watching the sale, {r.strategy}[/] (rounds in the order they ran)")
        console.print(watching.rounds_table(r.watch), markup=False, highlight=False)
        console.print(f"\n[bold]Side by side, {r.strategy}[/] (medians of each variant's rounds)")
        console.print(watching.side_by_side(r.watch), markup=False, highlight=False)
    console.print()
    for line in summary.headline_lines(head, done):
        console.print(line, markup=False, highlight=False)
    for r in done:
        console.print()
        console.print(format_checks(r.checks, title=f"Promises, {r.strategy}:"), markup=False)

    title = (
        f"flashorder-bench: {opts.scenario}, {opts.workers} workers, "
        f"{opts.concurrency} virtual users, {started:%Y-%m-%d %H:%M} UTC"
    )
    png = chart.render(done, path.with_suffix(".png"), title=title, p99_limit_ms=opts.p99_limit_ms)
    console.print(f"\nresults: {path}\nchart:   {png}")
    if not opts.keep:
        _tidy(logs)
    failures = [c for r in done for c in failed(r.checks)]
    if failures:
        console.print(f"[bold red]FAIL[/]: {len(failures)} promise(s) broken")
        return 1
    console.print("[bold green]PASS[/]: every promise held")
    return 0


def _write(opts: BenchOptions, started: datetime, done: list[StrategyResult]) -> Path:
    payload: dict[str, object] = {
        "startedAt": started.isoformat(),
        "command": " ".join(["flashorder-bench", *sys.argv[1:]]),
        "machine": results.machine(),
        "options": opts,
        "headline": summary.headline(done),
        "strategies": done,
    }
    return results.write(opts.out, payload, at=started)


def _tidy(logs: Path) -> None:
    """Keep the logs only when something in them is worth reading (a non-empty log)."""
    if not logs.exists():
        return
    for log in sorted(logs.rglob("*"), reverse=True):
        if log.is_file() and log.stat().st_size == 0:
            log.unlink()
        elif log.is_dir() and not any(log.iterdir()):
            log.rmdir()
    if logs.is_dir() and not any(logs.iterdir()):
        logs.rmdir()
