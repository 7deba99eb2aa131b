"""Run one load phase: spawn the generator processes, show progress, merge their samples.

The generators are spawned (not forked): the parent runs an event loop and client threads,
which a fork would copy in whatever state they were in.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flashorder_bench import loadgen
from flashorder_bench.loadgen import GenTask
from flashorder_bench.samples import Samples, merge

READY_TIMEOUT_S = 120.0

Tick = Callable[[], Awaitable[None]]


def generator_cpus(procs: int, pin: bool) -> list[int | None]:
    """The CPU each generator is pinned to: the last CPUs of this process's set, so that on
    two cores the generator keeps to one and the service has the other mostly to itself."""
    if not pin:
        return [None] * procs
    cpus = sorted(os.sched_getaffinity(0))
    return [cpus[-1 - (i % len(cpus))] for i in range(procs)]


async def drive(tasks: Sequence[GenTask], *, title: str, total: int, console: Console) -> Samples:
    """Run ``tasks`` (one per generator process) to the end; returns their merged samples."""
    ctx = multiprocessing.get_context("spawn")
    progress = ctx.Array("q", len(tasks), lock=False)
    procs: list[BaseProcess] = []
    conns: list[Connection] = []
    try:
        for task in tasks:
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=loadgen.main,
                args=(task, theirs, progress),
                name=f"flashorder-bench-gen-{task.index}",
                daemon=True,
            )
            proc.start()
            theirs.close()
            procs.append(proc)
            conns.append(ours)
        await _wait_all(conns, procs, "ready", deadline=time.monotonic() + READY_TIMEOUT_S)
        start_at = time.monotonic() + 0.1
        for conn in conns:
            conn.send(start_at)
        parts = await _collect(conns, procs, progress, title=title, total=total, console=console)
    finally:
        for started in procs:
            if started.is_alive():
                started.terminate()
            started.join(timeout=10)
        for conn in conns:
            conn.close()
    return merge(parts)


async def _wait_all(
    conns: Sequence[Connection], procs: Sequence[BaseProcess], word: str, *, deadline: float
) -> None:
    waiting = set(range(len(conns)))
    while waiting:
        for i in list(waiting):
            if conns[i].poll():
                got = conns[i].recv()
                if got != word:
                    raise RuntimeError(f"generator {i} said {got!r}, not {word!r}")
                waiting.discard(i)
            elif not procs[i].is_alive():
                raise RuntimeError(f"generator {i} exited with {procs[i].exitcode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"generators {sorted(waiting)} not {word} in time")
        await asyncio.sleep(0.05)


async def _collect(
    conns: Sequence[Connection],
    procs: Sequence[BaseProcess],
    progress: Sequence[int],
    *,
    title: str,
    total: int,
    console: Console,
) -> list[Samples]:
    parts: dict[int, Samples] = {}
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[rate]}"),
    )
    started = time.monotonic()
    with Progress(*columns, console=console, transient=False) as bar:
        job = bar.add_task(title, total=total, rate="")
        while len(parts) < len(conns):
            for i, conn in enumerate(conns):
                if i in parts:
                    continue
                if conn.poll():
                    parts[i] = conn.recv()
                elif not procs[i].is_alive():
                    raise RuntimeError(f"generator {i} exited with {procs[i].exitcode}")
            done = sum(progress[i] for i in range(len(conns)))
            elapsed = max(time.monotonic() - started, 1e-9)
            bar.update(job, completed=done, rate=f"{done / elapsed:,.0f} calls/s")
            await asyncio.sleep(0.1)
        bar.update(job, completed=sum(len(p) for p in parts.values()))
    return [parts[i] for i in range(len(conns))]
