"""One load phase against a running service: seed its products, drive its jobs from the
generator processes while sampling the stock, and distil what happened."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from rich.console import Console

from flashorder_bench import scenarios
from flashorder_bench.client import BenchClient, StockSampler
from flashorder_bench.cpu import PhaseCpu, ProcessSampler
from flashorder_bench.drive import drive, generator_cpus
from flashorder_bench.loadgen import GenTask, Mode
from flashorder_bench.options import BenchOptions
from flashorder_bench.samples import Samples
from flashorder_bench.scenarios import Job, ScenarioSpec
from flashorder_bench.settings import StackSettings
from flashorder_bench.stats import PhaseStats, Series, phase_stats, series, window


@dataclass
class PhaseRecord:
    """A phase as reported: its figures, its throughput and stock over time (seconds from the
    phase's first send), and the stock its sampled product started with."""

    name: str
    mode: Mode
    rate: float | None
    stats: PhaseStats
    series: Series
    stock_start: int | None = None
    stock: list[tuple[float, int]] = field(default_factory=list)
    #: CPU of every process over the phase and per accepted order; connections per worker.
    cpu: PhaseCpu | None = None


@dataclass
class PhaseContext:
    """What every phase of one strategy run shares."""

    opts: BenchOptions
    client: BenchClient
    settings: StackSettings
    console: Console
    #: Called after every phase: raises if the service's processes did not survive it.
    alive: Callable[[], None] = lambda: None
    #: The processes whose CPU a phase measures, by label (read at the start of each phase:
    #: the API's workers are found as its children).
    processes: Callable[[], Mapping[str, int]] = lambda: {"bench": os.getpid()}
    #: The API's port on this machine, to count each worker's connections (None: unknown).
    port: int | None = None


@dataclass
class PhaseRun:
    record: PhaseRecord
    jobs: list[Job]
    samples: Samples


async def prime(ctx: PhaseContext, spec: ScenarioSpec) -> ScenarioSpec:
    """``mixed`` reads orders: place a few before the phase and wait until they are readable."""
    if spec.name != "mixed":
        return spec
    seeds = scenarios.products(spec)
    placed: list[tuple[str, str]] = []
    for i in range(min(200, max(1, spec.requests // 10))):
        seed = seeds[i % len(seeds)]
        user = scenarios.user_id(spec, i)
        order_id = await ctx.client.place(user, seed.product_id, 1, seed.price)
        if order_id is not None:
            placed.append((order_id, user))
    await ctx.client.drained(need_projector=ctx.settings.kafka_bootstrap is not None, timeout=120)
    return replace(spec, orders=tuple(placed))


async def run_phase(
    ctx: PhaseContext, spec: ScenarioSpec, *, name: str, mode: Mode, rate: float | None = None
) -> PhaseRun:
    seeds = scenarios.products(spec)
    if not spec.echo:
        await ctx.client.seed(seeds)
        spec = await prime(ctx, spec)
    jobs = scenarios.jobs(spec)
    opts = ctx.opts
    tasks = [
        GenTask(
            base_url=ctx.client.base_url,
            spec=spec,
            index=i,
            procs=opts.generators,
            mode=mode,
            concurrency=opts.concurrency,
            rate=rate or 0.0,
            timeout_s=opts.timeout_s,
            settings=ctx.settings,
            cpu=cpu,
        )
        for i, cpu in enumerate(generator_cpus(opts.generators, opts.pin))
    ]
    sampler = None if spec.echo else StockSampler(ctx.client, seeds[0].product_id)
    watched = dict(ctx.processes())
    # The API's workers hold the connections (``flashorder serve --workers 1`` is one
    # process, the API itself).
    workers = {label: pid for label, pid in watched.items() if "-worker-" in label}
    if not workers and "api" in watched:
        workers = {"api": watched["api"]}
    usage = ProcessSampler(watched, workers=workers, port=ctx.port)
    usage.start()
    if sampler is not None:
        sampler.start()
    try:
        samples = await drive(
            tasks, title=name, total=sum(len(j.calls) for j in jobs), console=ctx.console
        )
    finally:
        await usage.stop()
        ctx.alive()
        points = await sampler.stop() if sampler is not None else []
    first, last_answer, last_accept = window(samples)
    stats = phase_stats(samples)
    record = PhaseRecord(
        name=name,
        mode=mode,
        rate=rate,
        stats=stats,
        # About 200 points per chart line, however long the phase.
        series=series(samples, bucket_s=max(0.5, stats.busy_s / 200)),
        stock_start=None if spec.echo else seeds[0].stock,
        stock=[(round(t - first, 3), v) for t, v in points if t >= first - 1.0],
        cpu=usage.phase(
            first_send=first,
            last_answer=last_answer,
            last_accept=last_accept,
            accepted=stats.accepted,
            generator_cpu_s=sum(samples.generator_cpu_s),
        ),
    )
    return PhaseRun(record, jobs, samples)
