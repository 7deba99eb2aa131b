"""One strategy's run: the stack up, the closed-loop sale (``repeat`` times on the same
processes), the ceiling, the open-loop ladder, the drain, the checks, the memory and the CPU
of every process."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from rich.console import Console
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from flashorder_bench import checks, drop, noshow, procs, scenarios, stores, watching, wrk
from flashorder_bench.answers import Answers
from flashorder_bench.auth import bearer, minter
from flashorder_bench.client import BenchClient, Drain
from flashorder_bench.drive import generator_cpus
from flashorder_bench.kafka_events import created_events
from flashorder_bench.options import BenchOptions
from flashorder_bench.otlp_sink import Sink, SinkStats
from flashorder_bench.phase import PhaseContext, PhaseRecord, PhaseRun, run_phase
from flashorder_bench.report import Check
from flashorder_bench.scenarios import ECHO_PATH, ScenarioSpec, order_body
from flashorder_bench.schedule import Step, best_rate, next_rate, rate_ladder
from flashorder_bench.settings import StackSettings, Strategy, local_store
from flashorder_bench.stack import Stack, bench_env, free_port, server_url
from flashorder_bench.stats import window
from flashorder_bench.viewers import Viewers
from flashorder_bench.wire import MAX_IDLE_SECONDS

#: Calls of the ceiling phase at most.
ECHO_CALLS_MAX = 20_000
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class StrategyResult:
    strategy: str
    base_url: str
    #: The warm-up before the measured runs (not measured: kept for the record).
    warmup: PhaseRecord | None = None
    closed: list[PhaseRecord] = field(default_factory=list)
    ceiling: PhaseRecord | None = None
    #: ``--wrk``: wrk against the echo route, and against a bare ASGI app (the HTTP floor).
    wrk_echo: wrk.WrkRun | None = None
    wrk_bare: wrk.WrkRun | None = None
    open_steps: list[PhaseRecord] = field(default_factory=list)
    best_open_rate: float | None = None
    drain: Drain | None = None
    checks: list[Check] = field(default_factory=list)
    #: Each process's VmRSS (kB) after each closed-loop run: the leak check.
    rss_after_runs: list[dict[str, int]] = field(default_factory=list)
    #: Each process's peak RSS (VmHWM, kB) over the whole run.
    rss_peak: dict[str, int] = field(default_factory=dict)
    #: The processes whose CPU was measured, by label.
    processes: dict[str, int] = field(default_factory=dict)
    #: The machine's 1-minute load average before and after the measured phases: on a
    #: shared machine, a busy neighbour shows here before it shows in the figures.
    load_before: float = 0.0
    load_after: float = 0.0
    #: The no-show sale's tally (the ``noshow`` scenario, which runs instead of the others).
    noshow: noshow.NoshowOutcome | None = None
    #: The queued drop's two sides (the ``queue`` scenario, which runs instead of the others).
    drop: drop.DropOutcome | None = None
    #: ``--viewers``/``--tracing``: the rounds of every variant (``closed`` holds the plain
    #: ones too).
    watch: watching.WatchResult | None = None


@dataclass
class _Expected:
    """What the run's phases must show beyond the promises: each phase's floor of accepted
    orders, and the hot products that must sell out."""

    floors: list[checks.Floor] = field(default_factory=list)
    hot: list[str] = field(default_factory=list)

    def phase(self, spec: ScenarioSpec, record: PhaseRecord, *, measured: bool) -> None:
        st = record.stats
        selling = spec.name in ("hot", "retry") and measured
        if selling:
            self.floors.append(checks.sale_floor(record.name, st.accepted, spec.stock))
            self.hot += [p.product_id for p in scenarios.products(spec)]
        else:
            self.floors.append(checks.ample_floor(record.name, st.accepted, st.order_calls))


async def run_strategy(
    opts: BenchOptions, strategy: Strategy, runtag: str, *, console: Console, logs: Path
) -> StrategyResult:
    """Everything for one strategy; ``runtag`` is shared by the strategies of one run, so
    they meet the same products, users and requests."""
    stack: Stack | None = None
    traced: Traced | None = None
    if opts.target is None:
        stack = _stack(opts, strategy, logs, traced=None)
        settings, base_url = stack.settings, stack.base
        if opts.tracing:
            sink = Sink(free_port())
            traced = Traced(_stack(opts, strategy, logs, traced=sink), sink)
    else:
        settings, base_url = StackSettings.from_env(), opts.target.rstrip("/")
    try:
        if stack is not None:
            console.log(f"[bold]{strategy}[/]: starting the stack ({stack.name}, logs {logs})")
            await asyncio.to_thread(stack.up, timeout=300)
        if traced is not None:
            console.log(f"[bold]{strategy}[/]: starting the traced stack ({traced.stack.name})")
            await asyncio.to_thread(traced.sink.start)
            await asyncio.to_thread(traced.stack.up, timeout=300)
        for started in (stack, traced.stack if traced is not None else None):
            if started is not None and not await asyncio.to_thread(started.settle):
                console.log(f"[yellow]{strategy}[/]: the stack was still busy after 60 s")
        return await _measure(opts, strategy, runtag, settings, base_url, stack, console, traced)
    finally:
        if stack is not None:
            await asyncio.to_thread(stack.down, drop=not opts.keep)
        if traced is not None:
            await asyncio.to_thread(traced.stack.down, drop=not opts.keep)
            await asyncio.to_thread(traced.sink.stop)


@dataclass
class Traced:
    """``--tracing``: a second stack, started with tracing on, and the OTLP sink its spans go
    to. Its Redis database is the next index after the plain stack's."""

    stack: Stack
    sink: Sink
    answers: Answers = field(default_factory=Answers)
    expected: _Expected = field(default_factory=_Expected)
    ctx: PhaseContext | None = None


def _stack(opts: BenchOptions, strategy: Strategy, logs: Path, *, traced: Sink | None) -> Stack:
    env = {"FLASHORDER_STRATEGY": strategy, **bench_env()}
    if traced is not None:
        # Every span exported as a deployment exports it (OTLP over HTTP/protobuf, the
        # default batch processor); the sampler is the environment's (default: every trace).
        env |= {
            "OTEL_SDK_DISABLED": "false",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": traced.endpoint,
        }
    elif opts.tracing:
        # The plain side of the comparison: off, whatever the environment says.
        env["OTEL_SDK_DISABLED"] = "true"
    return Stack(
        mariadb_url=server_url(local_store("FLASHORDER_DATABASE_URL")),
        redis_url=local_store("FLASHORDER_REDIS_URL"),
        kafka_bootstrap=local_store("FLASHORDER_KAFKA_BOOTSTRAP"),
        redis_db=opts.redis_db + (1 if traced is not None else 0),
        api_workers=opts.workers,
        logs=logs / (f"{strategy}-traced" if traced is not None else strategy),
        name_prefix=f"flashorder_bench_{strategy}" + ("_traced" if traced is not None else ""),
        extra_env=env,
    )


class StackDied(RuntimeError):
    pass


def _alive(stack: Stack) -> None:
    if dead := stack.dead():
        raise StackDied(
            f"stack processes exited during the run: {dead} (a negative status is the signal "
            f"that ended it; -9 is a kill from outside, the OOM killer or a drill); "
            f"logs in {stack.logs}"
        )


def _local_port(url: str | None, default: int) -> int | None:
    """The port of a store or service on this machine (None: elsewhere, or not set)."""
    if url is None:
        return None
    parts = urlsplit(url if "//" in url else f"//{url.split(',')[0]}")
    return (parts.port or default) if parts.hostname in LOCAL_HOSTS else None


def _services(opts: BenchOptions, settings: StackSettings) -> dict[str, int]:
    database = settings.database_url
    ports = {
        "mariadb": make_url(database).port or 3306 if database is not None else None,
        "redis": _local_port(settings.redis_url, 6379),
        "kafka": _local_port(settings.kafka_bootstrap, 9092),
    }
    if database is not None and make_url(database).host not in LOCAL_HOSTS:
        ports["mariadb"] = None
    return procs.service_pids(ports, opts.services_dir)


async def _measure(
    opts: BenchOptions,
    strategy: Strategy,
    runtag: str,
    settings: StackSettings,
    base_url: str,
    stack: Stack | None,
    console: Console,
    traced: Traced | None = None,
) -> StrategyResult:
    result = StrategyResult(strategy, base_url, load_before=os.getloadavg()[0])
    answers = Answers()
    expected = _Expected()
    generator_peak = 0
    services = await asyncio.to_thread(_services, opts, settings)
    port = stack.port if stack is not None else _local_port(base_url, 80)
    # A running stack's API, if it listens here (its relay and projector stay unknown).
    target_api = None if stack is not None or port is None else procs.listener(port)

    def processes() -> dict[str, int]:
        if stack is not None:
            found = procs.labelled(stack.pids())
        else:
            found = procs.labelled({"api": target_api}) if target_api is not None else {}
        found.update(services)
        found["bench"] = os.getpid()
        result.processes.update(found)
        return found

    # Idle connections go before uvicorn closes them (5 s), as the generator's do: aiohttp's
    # default (15 s) reused one the server was closing, and an admin call between two phases
    # failed with "Cannot write to closing transport".
    connector = aiohttp.TCPConnector(keepalive_timeout=MAX_IDLE_SECONDS)
    async with aiohttp.ClientSession(connector=connector) as session:
        ctx = PhaseContext(
            opts,
            BenchClient(session, base_url, minter(settings)),
            settings,
            console,
            processes=processes,
            port=port,
        )
        if stack is not None:
            ctx.alive = partial(_alive, stack)
        if traced is not None:
            traced.ctx = _traced_context(ctx, traced, services)
        selling = opts.scenario != "noshow"
        # The no-show sale and the queued drop run instead of the closed and open loops.
        closed_loop = opts.scenario not in ("noshow", "queue")
        if selling and (warmup := opts.warmup_spec(f"{runtag}w")) is not None:
            # Fresh processes warm up (connection pools, statement caches, the relay's and
            # the projector's first batches) before anything is measured; its orders are
            # checked with the rest.
            run = await run_phase(ctx, warmup, name=f"{strategy} warm-up", mode="closed")
            answers.add(run.jobs, run.samples)
            expected.phase(warmup, run.record, measured=False)
            result.warmup = run.record
            if traced is not None and traced.ctx is not None:
                warmup = opts.warmup_spec(f"{runtag}tw") or warmup
                name = f"{strategy} warm-up (tracing on)"
                run = await run_phase(traced.ctx, warmup, name=name, mode="closed")
                traced.answers.add(run.jobs, run.samples)
                traced.expected.phase(warmup, run.record, measured=False)
        if not selling:
            spec = opts.spec(f"{runtag}r0")
            console.log(f"[bold]{strategy}[/]: the no-show sale ({spec.requests:,} buyers)")
            result.noshow = await noshow.drive(
                ctx.client, spec, unpaid_share=opts.unpaid_share, concurrency=opts.concurrency
            )
            console.log(f"[bold]{strategy}[/]: {result.noshow.summary()}")
        if opts.scenario == "queue":
            spec = opts.spec(f"{runtag}q")
            console.log(
                f"[bold]{strategy}[/]: the drop, without then with the queue "
                f"({spec.requests:,} buyers, {spec.stock:,} units each side)"
            )
            plan = drop.DropPlan(
                admission_per_second=opts.admission_rate,
                wait=opts.queue_wait,
                prequeue_s=opts.prequeue_s,
                burst_s=opts.burst_s,
                late_share=opts.late_share,
                timeout_s=opts.timeout_s,
                deadline_s=settings.request_timeout_seconds,
            )
            run_drop = await drop.drive(ctx.client, spec, plan, ctx.client.mint)
            answers.add(run_drop.jobs, run_drop.without, deadline_s=plan.deadline_s)
            answers.add(run_drop.jobs, run_drop.queued)
            for side in (run_drop.outcome.without, run_drop.outcome.queued):
                expected.floors.append(checks.sale_floor(side.name, side.accepted, spec.stock))
                expected.hot.append(side.product_id)
            result.drop = run_drop.outcome
            if stack is not None:
                ctx.alive()
        watched = opts.viewers > 0 or traced is not None
        order = watching.plan(opts.viewers, traced is not None, opts.repeat) if closed_loop else []
        if watched:
            result.watch = watching.WatchResult(opts.viewers, traced is not None)
        for n, variant in enumerate(order):
            what = "run" if not watched else f"{watching.label(variant, opts.viewers)}, round"
            name = f"{strategy} closed loop, {what} {n + 1}/{len(order)}"
            spec = opts.spec(f"{runtag}r{n}")
            if variant == "traced" and traced is not None and traced.ctx is not None:
                run, done = await _traced_round(traced, spec, name)
                traced.answers.add(run.jobs, run.samples)
                traced.expected.phase(spec, run.record, measured=True)
            else:
                run, done = await _round(ctx, spec, name, variant)
                answers.add(run.jobs, run.samples)
                expected.phase(spec, run.record, measured=True)
                if variant == "plain":
                    result.closed.append(run.record)
                if stack is not None:
                    result.rss_after_runs.append(procs.snapshot(procs.labelled(stack.pids())))
            if result.watch is not None:
                result.watch.rounds.append(done)
            generator_peak = max(generator_peak, *run.samples.generator_rss_kb)
        if closed_loop and opts.ceiling and await ctx.client.has_echo():
            # The echo route needs no sell-out to be seen whole: a steady stretch will do.
            echo_calls = min(opts.spec(runtag).requests, ECHO_CALLS_MAX)
            spec = opts.spec(f"{runtag}e", requests=echo_calls, echo=True)
            run = await run_phase(ctx, spec, name=f"{strategy} ceiling (echo)", mode="closed")
            result.ceiling = run.record
            answers.server_errors += run.record.stats.server_errors
            if opts.wrk:
                body = order_body("u-wrk", "P-wrk", 1, spec.price)
                wrk_cpu = generator_cpus(1, opts.pin)[0]
                api = {k: v for k, v in ctx.processes().items() if procs.is_api(k)}
                result.wrk_echo = await wrk.run(
                    base_url + ECHO_PATH,
                    body,
                    bearer(ctx.client.mint, "u-wrk"),
                    server=api,
                    connections=opts.concurrency,
                    cpu=wrk_cpu,
                )
                result.wrk_bare = await wrk.bare_front(
                    body, workers=opts.workers, connections=opts.concurrency, cpu=wrk_cpu
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
                answers.add(run.jobs, run.samples, deadline_s=settings.request_timeout_seconds)
                result.open_steps.append(run.record)
                st = run.record.stats
                steps.append(Step(rate, st.latency.p99, st.server_errors + st.transport_errors))
            result.best_open_rate = best_rate(steps, opts.p99_limit_ms)
        result.load_after = os.getloadavg()[0]
        console.log(f"[bold]{strategy}[/]: waiting for the events to drain (/readyz lag)")
        result.drain = await ctx.client.drained(need_projector=settings.kafka_bootstrap is not None)
        traced_drain = None
        if traced is not None and traced.ctx is not None:
            traced_drain = await traced.ctx.client.drained(need_projector=True)
    if stack is not None:
        pids = procs.labelled(stack.pids())
        result.rss_peak = procs.snapshot(pids, "VmHWM")
    result.rss_peak["load-generator"] = generator_peak
    result.checks = await _checks(opts, strategy, runtag, settings, answers, expected, result)
    if result.watch is not None:
        result.checks += await _watch_checks(opts, strategy, runtag, result, traced, traced_drain)
    return result


def _traced_context(ctx: PhaseContext, traced: Traced, services: dict[str, int]) -> PhaseContext:
    stack, sink = traced.stack, traced.sink

    def processes() -> dict[str, int]:
        found = procs.labelled(stack.pids())
        found.update(services)
        found["bench"] = os.getpid()
        if sink.pid is not None:
            found["otlp-sink"] = sink.pid
        return found

    client = BenchClient(ctx.client.session, stack.base, minter(stack.settings))
    return PhaseContext(
        ctx.opts,
        client,
        stack.settings,
        ctx.console,
        alive=partial(_alive, stack),
        processes=processes,
        port=stack.port,
    )


async def _round(
    ctx: PhaseContext, spec: ScenarioSpec, name: str, variant: watching.Variant
) -> tuple[PhaseRun, watching.WatchRound]:
    """One closed-loop sale on the plain stack; ``viewers``: with that many pages open on
    its hot product from before the sale until they show it sold out."""
    product_id = scenarios.products(spec)[0].product_id
    if variant != "viewers":
        run = await run_phase(ctx, spec, name=name, mode="closed")
        return run, _watch_round(variant, run, product_id)
    pages = Viewers(ctx.client.base_url, product_id, ctx.opts.viewers, ctx.client.admin)
    async with pages:
        run = await run_phase(ctx, spec, name=name, mode="closed")
        await pages.settle()
    return run, _watch_round(variant, run, product_id, viewers=pages)


async def _traced_round(
    traced: Traced, spec: ScenarioSpec, name: str
) -> tuple[PhaseRun, watching.WatchRound]:
    assert traced.ctx is not None
    before = await asyncio.to_thread(traced.sink.stats)
    run = await run_phase(traced.ctx, spec, name=name, mode="closed")
    after = await asyncio.to_thread(traced.sink.stats)
    product_id = scenarios.products(spec)[0].product_id
    done = _watch_round("traced", run, product_id)
    done.spans = after.minus(before)
    return run, done


def _watch_round(
    variant: watching.Variant, run: PhaseRun, product_id: str, *, viewers: Viewers | None = None
) -> watching.WatchRound:
    start, end, _ = window(run.samples)
    return watching.WatchRound(
        variant,
        run.record,
        product_id,
        viewers=viewers.tallies if viewers is not None else [],
        sale_start=start,
        sale_end=end,
        load=os.getloadavg()[0],
    )


async def _watch_checks(
    opts: BenchOptions,
    strategy: Strategy,
    runtag: str,
    result: StrategyResult,
    traced: Traced | None,
    traced_drain: Drain | None,
) -> list[Check]:
    """The pages' and the sink's checks, and the promises again on the traced stack."""
    assert result.watch is not None
    found = []
    if opts.viewers > 0:
        found.append(watching.viewers_check(result.watch.rounds, opts.viewers))
    if traced is None:
        return found
    # The batch processor sends what it holds every few seconds: read the sink once it has
    # stopped growing.
    result.watch.sink = await _settled(traced.sink)
    found.append(watching.tracing_check(result.watch))
    side = StrategyResult(strategy, traced.stack.base, drain=traced_drain)
    promises = await _checks(
        opts, strategy, runtag, traced.stack.settings, traced.answers, traced.expected, side
    )
    found += [replace(c, name=f"tracing on: {c.name}") for c in promises]
    return found


async def _settled(sink: Sink, *, quiet_s: float = 6.0, timeout: float = 30.0) -> SinkStats:
    deadline = asyncio.get_running_loop().time() + timeout
    last = await asyncio.to_thread(sink.stats)
    still = 0.0
    while still < quiet_s and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(1.0)
        now = await asyncio.to_thread(sink.stats)
        still = still + 1.0 if now == last else 0.0
        last = now
    return last


async def _checks(
    opts: BenchOptions,
    strategy: Strategy,
    runtag: str,
    settings: StackSettings,
    answers: Answers,
    expected: _Expected,
    result: StrategyResult,
) -> list[Check]:
    product_prefix, user_prefix = f"P{runtag}", f"u{runtag}"
    skip = opts.skip_checks
    found: list[Check] = []
    if result.drain is not None:
        found.append(
            checks.drained_check(
                result.drain.drained,
                result.drain.seconds,
                result.drain.projectors,
                needed=settings.kafka_bootstrap is not None,
            )
        )
    if result.noshow is not None:
        found.append(result.noshow.check())
    else:
        found.append(checks.floor_check(expected.floors))
    if settings.database_url is None:
        found.append(
            checks.unavailable(
                "the promises in the database",
                "FLASHORDER_DATABASE_URL is not set",
                skip,
                "database",
            )
        )
        model = stores.WriteModel({}, {}, {})
    else:
        engine = create_async_engine(settings.database_url, poolclass=NullPool)
        try:
            model = await stores.load_write_model(engine, product_prefix)
            if result.noshow is not None:
                times = await stores.order_times(engine, product_prefix)
                found += [
                    checks.noshow_balance_check(model),
                    checks.resold_check(model, times),
                    checks.expiry_seen_check(times),
                ]
            else:
                found += checks.stock_checks(model, answers)
            if opts.scenario in ("hot", "retry", "queue"):
                found.append(checks.sold_out_check(model, answers, expected.hot))
            if result.drop is not None:
                found += _drop_checks(opts, settings, model, result.drop)
            if opts.scenario == "retry":
                recorded = await stores.idempotency_orders(engine, user_prefix)
                found.append(checks.idempotency_check(model, answers, recorded))
            else:
                found.append(Check.skipped("one order per Idempotency-Key", "retry scenario only"))
            found.append(checks.limit_check(model))
            read = await stores.load_read_model(engine, product_prefix)
            found.append(checks.read_model_check(model, read))
        finally:
            await engine.dispose()
    gate = "Redis gate count == database available"
    if strategy != "reserve":
        found.append(Check.skipped(gate, "reserve only"))
    elif settings.redis_url is None:
        found.append(checks.unavailable(gate, "FLASHORDER_REDIS_URL is not set", skip, "gate"))
    elif settings.database_url is not None:
        counts = await stores.gate_counts(settings.redis_url, model.products)
        found.append(checks.gate_check(model, counts))
    events = "exactly one order.created per committed order (Kafka)"
    if settings.kafka_bootstrap is None:
        found.append(
            checks.unavailable(events, "FLASHORDER_KAFKA_BOOTSTRAP is not set", skip, "events")
        )
    elif settings.database_url is not None:
        created = await created_events(
            settings.kafka_bootstrap,
            topic_prefix=settings.kafka_topic_prefix,
            product_prefix=product_prefix,
        )
        found.append(checks.events_check(model, created))
    # The drop's side without the queue is an open-loop burst: the deadline's 503 is how it
    # fails, not a broken promise.
    open_loop = bool(result.open_steps) or result.drop is not None
    found += checks.answer_checks(answers, open_loop=open_loop)
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


def _drop_checks(
    opts: BenchOptions, settings: StackSettings, model: stores.WriteModel, outcome: drop.DropOutcome
) -> list[Check]:
    sides = (outcome.without.product_id, outcome.queued.product_id)
    return [
        checks.one_order_per_buyer_check(model, sides),
        checks.admitted_orders_check(model, outcome.queued.product_id, outcome.tickets),
        checks.tickets_end_check(outcome.tickets),
        checks.fair_draw_check(outcome.tickets),
        checks.admission_pace_check(
            outcome.tickets, outcome.admission_per_second, tick_s=settings.queue_tick_seconds
        ),
        *checks.drop_pace_checks(outcome.without, outcome.queued, opts.p99_limit_ms),
    ]
