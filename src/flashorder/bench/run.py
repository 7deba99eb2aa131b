"""One strategy's run: the stack up, the closed-loop sale (``repeat`` times on the same
processes), the ceiling, the open-loop ladder, the drain, the checks, the memory."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import aiohttp
from redis.asyncio import Redis
from rich.console import Console

from flashorder.adapters.sql.engine import make_engine
from flashorder.adapters.stock.redis import RedisStockGate
from flashorder.bench import checks, procs, wrk
from flashorder.bench.answers import Answers
from flashorder.bench.auth import bearer, minter
from flashorder.bench.client import BenchClient
from flashorder.bench.drive import generator_cpus
from flashorder.bench.kafka_events import created_events
from flashorder.bench.options import BenchOptions, Strategy
from flashorder.bench.phase import PhaseContext, PhaseRecord, run_phase
from flashorder.bench.report import Check
from flashorder.bench.scenarios import order_body
from flashorder.bench.schedule import Step, best_rate, next_rate, rate_ladder
from flashorder.bench.stack import BenchStack
from flashorder.config import Settings

#: Calls of the ceiling phase at most.
ECHO_CALLS_MAX = 20_000


@dataclass
class StrategyResult:
    strategy: str
    base_url: str
    #: The warm-up before the measured runs (not measured: kept for the record).
    warmup: PhaseRecord | None = None
    closed: list[PhaseRecord] = field(default_factory=list)
    ceiling: PhaseRecord | None = None
    wrk_echo_per_s: float | None = None
    open_steps: list[PhaseRecord] = field(default_factory=list)
    best_open_rate: float | None = None
    drained: bool = False
    drain_s: float = 0.0
    checks: list[Check] = field(default_factory=list)
    #: Each process's VmRSS (kB) after each closed-loop run: the leak check.
    rss_after_runs: list[dict[str, int]] = field(default_factory=list)
    #: Each process's peak RSS (VmHWM, kB) over the whole run.
    rss_peak: dict[str, int] = field(default_factory=dict)
    #: The machine's 1-minute load average before and after the measured phases: on a
    #: shared machine, a busy neighbour shows here before it shows in the figures.
    load_before: float = 0.0
    load_after: float = 0.0


async def run_strategy(
    opts: BenchOptions, strategy: Strategy, runtag: str, *, console: Console, logs: Path
) -> StrategyResult:
    """Everything for one strategy; ``runtag`` is shared by the strategies of one run, so
    they meet the same products, users and requests."""
    stack: BenchStack | None = None
    if opts.target is None:
        stack = BenchStack(
            database_url=_setting("database_url"),
            redis_url=_setting("redis_url"),
            kafka_bootstrap=_setting("kafka_bootstrap"),
            redis_db=opts.redis_db,
            workers=opts.workers,
            strategy=strategy,
            logs=logs / strategy,
        )
        settings, base_url = stack.settings, stack.base_url
    else:
        settings, base_url = Settings(), opts.target.rstrip("/")
    try:
        if stack is not None:
            console.log(f"[bold]{strategy}[/]: starting the stack ({stack.name}, logs {logs})")
            await stack.up()
        return await _measure(opts, strategy, runtag, settings, base_url, stack, console)
    finally:
        if stack is not None:
            await stack.down(drop=not opts.keep)


class StackDied(RuntimeError):
    pass


def _alive(stack: BenchStack) -> None:
    if dead := stack.dead():
        raise StackDied(
            f"stack processes exited during the run: {dead} (a negative status is the signal "
            f"that ended it; -9 is a kill from outside, the OOM killer or a drill); "
            f"logs in {stack.logs}"
        )


def _setting(name: str) -> str:
    """A store of the full stack: from FLASHORDER_* (``make bench``), else the local one."""
    local = {
        "database_url": "mysql+asyncmy://flashorder:flashorder@127.0.0.1:3306/flashorder",
        "redis_url": "redis://127.0.0.1:6379/0",
        "kafka_bootstrap": "127.0.0.1:9092",
    }
    value = getattr(Settings(), name)
    return str(value) if value is not None else local[name]


async def _measure(
    opts: BenchOptions,
    strategy: Strategy,
    runtag: str,
    settings: Settings,
    base_url: str,
    stack: BenchStack | None,
    console: Console,
) -> StrategyResult:
    result = StrategyResult(strategy, base_url, load_before=os.getloadavg()[0])
    answers = Answers()
    generator_peak = 0
    async with aiohttp.ClientSession() as session:
        ctx = PhaseContext(
            opts, BenchClient(session, base_url, minter(settings)), settings, console
        )
        if stack is not None:
            ctx.alive = partial(_alive, stack)
        if (warmup := opts.warmup_spec(f"{runtag}w")) is not None:
            # Fresh processes warm up (connection pools, statement caches, the relay's and
            # the projector's first batches) before anything is measured; its orders are
            # checked with the rest.
            run = await run_phase(ctx, warmup, name=f"{strategy} warm-up", mode="closed")
            answers.add(run.jobs, run.samples)
            result.warmup = run.record
        for rep in range(opts.repeat):
            name = f"{strategy} closed loop, run {rep + 1}/{opts.repeat}"
            run = await run_phase(ctx, opts.spec(f"{runtag}r{rep}"), name=name, mode="closed")
            answers.add(run.jobs, run.samples)
            result.closed.append(run.record)
            generator_peak = max(generator_peak, *run.samples.generator_rss_kb)
            if stack is not None:
                result.rss_after_runs.append(procs.snapshot(procs.labelled(stack.pids())))
        if opts.ceiling and await ctx.client.has_echo():
            # The echo route needs no sell-out to be seen whole: a steady stretch will do.
            echo_calls = min(opts.spec(runtag).requests, ECHO_CALLS_MAX)
            spec = opts.spec(f"{runtag}e", requests=echo_calls, echo=True)
            run = await run_phase(ctx, spec, name=f"{strategy} ceiling (echo)", mode="closed")
            result.ceiling = run.record
            answers.server_errors += run.record.stats.server_errors
            if opts.wrk:
                result.wrk_echo_per_s = await wrk.echo_rate(
                    base_url,
                    order_body("u-wrk", "P-wrk", 1, spec.price),
                    bearer(ctx.client.mint, "u-wrk"),
                    connections=opts.concurrency,
                    cpu=generator_cpus(1, opts.pin)[0],
                )
        if opts.open_loop and result.closed:
            peak = result.closed[0].stats.order_calls_per_s
            planned = opts.rates or tuple(rate_ladder(peak))
            steps: list[Step] = []
            while (rate := next_rate(planned, steps, opts.p99_limit_ms)) is not None:
                requests = max(1, round(rate * opts.step_seconds))
                spec = opts.spec(f"{runtag}o{len(steps)}", requests=requests)
                name = f"{strategy} open loop {rate:,.0f}/s"
                run = await run_phase(ctx, spec, name=name, mode="open", rate=rate)
                answers.add(run.jobs, run.samples, count_errors=False)
                result.open_steps.append(run.record)
                st = run.record.stats
                steps.append(Step(rate, st.latency.p99, st.server_errors + st.transport_errors))
            result.best_open_rate = best_rate(steps, opts.p99_limit_ms)
        result.load_after = os.getloadavg()[0]
        console.log(f"[bold]{strategy}[/]: waiting for the events to drain (/readyz lag)")
        result.drained, result.drain_s = await ctx.client.drained()
    if stack is not None:
        pids = procs.labelled(stack.pids())
        result.rss_peak = procs.snapshot(pids, "VmHWM")
    result.rss_peak["load-generator"] = generator_peak
    result.checks = await _checks(opts, strategy, runtag, settings, answers, result)
    return result


async def _checks(
    opts: BenchOptions,
    strategy: Strategy,
    runtag: str,
    settings: Settings,
    answers: Answers,
    result: StrategyResult,
) -> list[Check]:
    product_prefix, user_prefix = f"P{runtag}", f"u{runtag}"
    found: list[Check] = [
        Check.of("events drained (/readyz lag 0)", result.drained, f"after {result.drain_s:.1f}s")
    ]
    engine = make_engine(settings.effective_database_url, pool_size=2)
    try:
        model = await checks.load_write_model(engine, product_prefix)
        found += checks.stock_checks(model, answers)
        if strategy == "reserve" and settings.redis_url is not None:
            redis = Redis.from_url(settings.redis_url)
            try:
                found.append(await checks.gate_check(model, RedisStockGate(redis)))
            finally:
                await redis.aclose()
        else:
            found.append(Check.skipped("Redis gate count == database available", "reserve only"))
        if opts.scenario == "retry":
            found.append(await checks.idempotency_check(engine, model, answers, user_prefix))
        else:
            found.append(Check.skipped("one order per Idempotency-Key", "retry scenario only"))
        found.append(checks.limit_check(model))
        if settings.kafka_bootstrap is not None:
            created = await created_events(
                settings.kafka_bootstrap,
                topic_prefix=settings.kafka_topic_prefix,
                product_prefix=product_prefix,
            )
            found.append(checks.events_check(model, created))
        else:
            found.append(Check.skipped("exactly one order.created per order (Kafka)", "no Kafka"))
        found.append(await checks.read_model_check(engine, model, product_prefix))
    finally:
        await engine.dispose()
    found += checks.answer_checks(answers)
    if len(result.rss_after_runs) > 1:
        steady, grown = procs.leak_report(result.rss_after_runs)
        found.append(
            Check.of(
                "RSS after each run within 10% of after the first",
                steady,
                "; ".join(grown[:3]) or f"{len(result.rss_after_runs[0])} processes steady",
            )
        )
    return found
