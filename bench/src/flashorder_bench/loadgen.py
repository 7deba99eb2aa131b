"""The load generator: one OS process, one event loop (uvloop), a lean keep-alive client.

It runs in processes of its own (``drive`` spawns them), so that its CPU is not the parent's
and can be pinned. Each process builds the phase's jobs from the spec, takes its share,
mints its users' tokens, says it is ready, waits for the common start instant, and sends
back the raw samples of every call.

- closed loop: ``concurrency`` virtual users in all, each sending its next job as soon as
  the previous one is answered: the peak a given number of clients can drive.
- open loop: job ``i`` is due at ``start + i / rate`` and is sent then, whatever happened to
  the others; its latency counts from when it was due.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Literal, Protocol

import httptools
import orjson
import uvloop

from flashorder_bench import scenarios
from flashorder_bench.auth import minter, user_headers
from flashorder_bench.procs import own_peak_kb
from flashorder_bench.samples import ORDER, TRANSPORT_ERROR, Samples
from flashorder_bench.scenarios import Call, Job, ScenarioSpec
from flashorder_bench.schedule import share
from flashorder_bench.settings import StackSettings
from flashorder_bench.wire import WireClient

Mode = Literal["closed", "open"]


class Progress(Protocol):
    """A shared array of counters, one slot per generator process."""

    def __getitem__(self, index: int, /) -> int: ...
    def __setitem__(self, index: int, value: int, /) -> None: ...


@dataclass(frozen=True, slots=True)
class GenTask:
    base_url: str
    spec: ScenarioSpec
    index: int
    procs: int
    mode: Mode
    #: Closed loop: virtual users over all processes.
    concurrency: int
    #: Open loop: calls per second over all processes.
    rate: float
    timeout_s: float
    #: The stack's settings, to mint tokens with.
    settings: StackSettings
    cpu: int | None = None

    @property
    def users_here(self) -> int:
        extra = 1 if self.index < self.concurrency % self.procs else 0
        return self.concurrency // self.procs + extra


def main(task: GenTask, conn: Connection, progress: Progress) -> None:
    """The process's entry point: handshake, run, send the samples back."""
    if task.cpu is not None:
        os.sched_setaffinity(0, {task.cpu})
    every = scenarios.jobs(task.spec)
    mine = [(i, every[i]) for i in share(len(every), task.procs, task.index)]
    mint = minter(task.settings)
    headers = user_headers(mint, (c.user_id for _, job in mine for c in job.calls if c.user_id))
    conn.send("ready")
    start_at = float(conn.recv())
    before = os.times()
    samples = uvloop.run(_Run(task, mine, headers, progress).go(start_at))
    after = os.times()
    samples.generator_rss_kb.append(own_peak_kb())
    samples.generator_cpu_s.append((after.user + after.system) - (before.user + before.system))
    conn.send(samples)
    conn.close()


class _Run:
    def __init__(
        self,
        task: GenTask,
        mine: list[tuple[int, Job]],
        headers: Mapping[str, Mapping[str, str]],
        progress: Progress,
    ) -> None:
        self.task = task
        self.mine = mine
        self.headers = headers
        self.progress = progress
        self.samples = Samples()

    async def go(self, start_at: float) -> Samples:
        # A closed loop keeps one connection per virtual user; an open loop opens as many as
        # the calls in flight need.
        client = WireClient(self.task.base_url, timeout=self.task.timeout_s)
        try:
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
            if self.task.mode == "closed":
                await self._closed(client)
            else:
                await self._open(client, start_at)
        finally:
            client.close()
        return self.samples

    async def _closed(self, client: WireClient) -> None:
        queue = iter(self.mine)

        async def virtual_user(jobs: Iterator[tuple[int, Job]]) -> None:
            # One iterator shared by every user: each takes the next job when it is free.
            for index, job in jobs:
                await self._job(client, index, job, time.monotonic())

        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, self.task.users_here)):
                group.create_task(virtual_user(queue))

    async def _open(self, client: WireClient, start_at: float) -> None:
        rate = self.task.rate
        running: set[asyncio.Task[None]] = set()
        for index, job in self.mine:
            due = start_at + index / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            # Late or not, the job is stamped with when it was due.
            task = asyncio.create_task(self._job(client, index, job, due))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)

    async def _job(self, client: WireClient, index: int, job: Job, due: float) -> None:
        if job.concurrent and len(job.calls) > 1:
            await asyncio.gather(*(self._call(client, index, c, due) for c in job.calls))
            return
        for n, call in enumerate(job.calls):
            await self._call(client, index, call, due if n == 0 else time.monotonic())

    async def _call(self, client: WireClient, index: int, call: Call, due: float) -> None:
        headers = {"Content-Type": "application/json", **self.headers.get(call.user_id, {})}
        if call.idempotency_key is not None:
            headers["Idempotency-Key"] = call.idempotency_key
        raw = client.encode(call.method, call.path, headers, call.body)
        status, order_id, error = TRANSPORT_ERROR, None, None
        started = time.monotonic()
        try:
            status, payload = await client.call(raw)
            if call.kind == ORDER and 200 <= status < 300:
                order_id = str(orjson.loads(payload)["orderId"])
        except (
            OSError,
            TimeoutError,
            httptools.HttpParserError,
            orjson.JSONDecodeError,
            KeyError,
        ) as exc:
            error = type(exc).__name__
        self.samples.add(
            job=index,
            intended=due,
            start=started,
            end=time.monotonic(),
            status=status,
            kind=call.kind,
            order_id=order_id,
            error=error,
        )
        self.progress[self.task.index] = len(self.samples)
