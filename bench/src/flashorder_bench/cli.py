"""The ``flashorder-bench`` command."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from flashorder_bench.checks import SKIPPABLE
from flashorder_bench.options import BenchOptions, parse_scenario, parse_strategies, parse_wait

cli = typer.Typer(
    name="flashorder-bench",
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _terminated(signum: int, frame: FrameType | None) -> None:
    # A SIGTERM (``timeout``, a CI runner) unwinds like Ctrl-C instead of ending the process
    # on the spot: the stacks the bench started are stopped and their databases dropped.
    sys.exit(128 + signum)


def _skips(text: str) -> tuple[str, ...]:
    chosen = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SKIPPABLE]
    if unknown:
        raise ValueError(f"unknown check {unknown[0]!r}: one of {', '.join(SKIPPABLE)}")
    return chosen


def _watchable(scenario: str, viewers: int, tracing: bool, target: str | None) -> None:
    if (viewers or tracing) and scenario not in ("hot", "retry"):
        raise ValueError("--viewers and --tracing watch a hot sale: --scenario hot or retry")
    if tracing and target is not None:
        raise ValueError("--tracing starts a stack of its own: not with --target")


@cli.command()
def bench(
    scenario: Annotated[
        str,
        typer.Option(help="hot | many | retry | mixed | noshow | queue (see docs/benchmarks.md)"),
    ] = "hot",
    strategies: Annotated[str, typer.Option(help="Comma-separated: reserve,lock")] = "reserve,lock",
    requests: Annotated[int | None, typer.Option(help="Order requests per run")] = None,
    stock: Annotated[int | None, typer.Option(help="Stock of the hot product")] = None,
    users: Annotated[int | None, typer.Option(help="Distinct buyers")] = None,
    max_per_user: Annotated[int | None, typer.Option(help="Per-user limit (hot, retry)")] = None,
    products: Annotated[int | None, typer.Option(help="Products (many, mixed)")] = None,
    workers: Annotated[int, typer.Option(help="API worker processes")] = 2,
    concurrency: Annotated[int, typer.Option(help="Closed loop: virtual users")] = 64,
    generators: Annotated[int, typer.Option(help="Load generator processes")] = 1,
    pin: Annotated[bool, typer.Option(help="Pin the generators to the last CPUs")] = False,
    repeat: Annotated[int, typer.Option(help="Closed-loop runs on the same processes")] = 1,
    warmup: Annotated[
        int, typer.Option(help="Warm-up requests first (at most a tenth of a run; 0: none)")
    ] = 2_000,
    open_loop: Annotated[bool, typer.Option(help="Step open-loop rates after the runs")] = True,
    rates: Annotated[str, typer.Option(help="Open-loop rates, e.g. 500,1000 (default: auto)")] = "",
    step_seconds: Annotated[float, typer.Option(help="Seconds per open-loop step")] = 5.0,
    p99_ms: Annotated[float, typer.Option(help="Open loop: the p99 a rate must hold")] = 100.0,
    ceiling: Annotated[bool, typer.Option(help="Measure the echo route (HTTP ceiling)")] = True,
    wrk: Annotated[bool, typer.Option(help="Also drive the echo route with wrk")] = False,
    target: Annotated[
        str | None, typer.Option(help="Drive a running stack at this URL (no reset)")
    ] = None,
    skip_check: Annotated[
        str,
        typer.Option(
            help="With --target: checks to leave out when their store is not set, "
            f"comma-separated ({', '.join(SKIPPABLE)}); otherwise they fail"
        ),
    ] = "",
    out: Annotated[Path, typer.Option(help="Folder of the results")] = Path("bench-results"),
    redis_db: Annotated[int, typer.Option(help="Redis database index of the bench")] = 9,
    keep: Annotated[bool, typer.Option(help="Keep the databases and logs")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the requests")] = 1,
    pay_within: Annotated[
        int, typer.Option(help="noshow: the product's payWithinSeconds", min=1)
    ] = 3,
    unpaid_share: Annotated[
        float, typer.Option(help="noshow: the share of winners who never pay", min=0, max=1)
    ] = 0.3,
    admission_rate: Annotated[
        float,
        typer.Option(
            help="queue: the queued product's admissionPerSecond (0: as fast as the service "
            "sustains)",
            min=0,
        ),
    ] = 100.0,
    queue_wait: Annotated[
        str, typer.Option(help="queue: how buyers wait on their ticket: stream | poll")
    ] = "stream",
    prequeue: Annotated[
        float, typer.Option(help="queue: seconds of pre-queue before the start", min=1)
    ] = 5.0,
    burst: Annotated[
        float, typer.Option(help="queue: seconds the crowd's orders spread over without it", min=0)
    ] = 1.0,
    late_share: Annotated[
        float,
        typer.Option(help="queue: the share of the crowd that joins after the start", min=0, max=1),
    ] = 0.1,
    viewers: Annotated[
        int,
        typer.Option(
            help="Also run rounds with this many open sale pages (/sales/{productId} streams), "
            "alternating with plain rounds (--repeat: rounds of each)",
            min=0,
        ),
    ] = 0,
    tracing: Annotated[
        bool,
        typer.Option(
            help="Also run rounds on a second stack with tracing on (spans exported over "
            "OTLP/HTTP to a sink of the bench; its Redis database is --redis-db + 1)"
        ),
    ] = False,
    services_dir: Annotated[
        Path | None,
        typer.Option(
            help="Pid files of scripts/services.sh (default: $FLASHORDER_SERVICES_DIR or "
            ".services), to find the stores' processes if their ports do not tell"
        ),
    ] = None,
) -> None:
    """The flash-sale benchmark on the full stack: throughput, latency, memory, CPU per
    accepted order, and every promise checked in the stores. Exit status 1 if one failed."""
    from flashorder_bench.main import run_bench

    try:
        chosen, strategy_list = parse_scenario(scenario), parse_strategies(strategies)
        wait = parse_wait(queue_wait)
        skips = _skips(skip_check)
        _watchable(chosen, viewers, tracing, target)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    options = BenchOptions(
        scenario=chosen,
        strategies=strategy_list,
        requests=requests,
        stock=stock,
        users=users,
        max_per_user=max_per_user,
        products=products,
        workers=workers,
        concurrency=concurrency,
        generators=generators,
        pin=pin,
        repeat=repeat,
        warmup=warmup,
        open_loop=open_loop,
        rates=tuple(float(r) for r in rates.split(",") if r.strip()),
        step_seconds=step_seconds,
        p99_limit_ms=p99_ms,
        ceiling=ceiling,
        wrk=wrk,
        target=target,
        out=out,
        redis_db=redis_db,
        keep=keep,
        seed=seed,
        skip_checks=skips,
        pay_within=pay_within,
        unpaid_share=unpaid_share,
        admission_rate=admission_rate or None,
        queue_wait=wait,
        prequeue_s=prequeue,
        burst_s=burst,
        late_share=late_share,
        viewers=viewers,
        tracing=tracing,
        services_dir=services_dir or Path(os.environ.get("FLASHORDER_SERVICES_DIR") or ".services"),
    )
    signal.signal(signal.SIGTERM, _terminated)
    raise typer.Exit(asyncio.run(run_bench(options)))


def main() -> None:
    cli()
