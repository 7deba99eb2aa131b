"""CPU per accepted order, per process, and how the clients' connections spread over the
API workers: both sampled from ``/proc`` while a phase runs.

Every process of the stack is sampled (the API supervisor and each worker, the relay, the
projector, and the stores: MariaDB, Redis, Kafka), and the bench's own parent process
apart; the generator processes report their own CPU (``Samples.generator_cpu_s``). From
the readings, the CPU each process used over a window of the phase is interpolated: the
whole phase (first send to last answer) and the selling window (first send to the last
accepted order), which is the figure per accepted order.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from flashorder_bench import procs

#: The labels that are not the stack: the bench's parent (which also holds the open sale
#: pages of ``--viewers``), its load generators, and the OTLP sink of ``--tracing`` (a
#: deployment's collector runs elsewhere).
APART = ("bench", "load-generator", "otlp-sink")


@dataclass(frozen=True, slots=True)
class Reading:
    at: float
    cpu_s: dict[str, float]


@dataclass
class PhaseCpu:
    """CPU seconds of each process over the phase and over its selling window, the accepted
    orders of that window, and the most connections seen on each API worker at once."""

    phase_s: dict[str, float] = field(default_factory=dict)
    selling_s: dict[str, float] = field(default_factory=dict)
    accepted: int = 0
    connections: dict[str, int] = field(default_factory=dict)

    def stack_selling_s(self) -> float:
        return sum(s for label, s in self.selling_s.items() if label not in APART)

    def ms_per_order(self) -> dict[str, float]:
        """Each process's CPU per accepted order (ms) over the selling window, and the
        stack's sum as ``stack``; empty when nothing was accepted."""
        if not self.accepted:
            return {}
        per = {label: 1000 * s / self.accepted for label, s in self.selling_s.items()}
        per["stack"] = 1000 * self.stack_selling_s() / self.accepted
        return per


def used(readings: Sequence[Reading], start: float, end: float) -> dict[str, float]:
    """CPU seconds each process used from ``start`` to ``end``, interpolated linearly between
    the readings (clamped to the first and last); a process missing from a reading (gone,
    or not yet found) counts from its first reading to its last."""
    if not readings or end <= start:
        return {}
    labels = {label for r in readings for label in r.cpu_s}
    return {
        label: max(0.0, _at(readings, label, end) - _at(readings, label, start)) for label in labels
    }


def _at(readings: Sequence[Reading], label: str, t: float) -> float:
    points = [(r.at, r.cpu_s[label]) for r in readings if label in r.cpu_s]
    times = [p[0] for p in points]
    i = bisect.bisect_left(times, t)
    if i == 0:
        return points[0][1]
    if i == len(points):
        return points[-1][1]
    (t0, v0), (t1, v1) = points[i - 1], points[i]
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1


def read(pids: Mapping[str, int]) -> Reading:
    taken = {label: procs.cpu_seconds(pid) for label, pid in pids.items()}
    return Reading(time.monotonic(), {k: v for k, v in taken.items() if v is not None})


class ProcessSampler:
    """Reads the CPU of ``pids`` every ``every`` seconds while a phase runs, and the
    connections to ``port`` held by the ``workers`` (the busiest reading is kept)."""

    def __init__(
        self,
        pids: Mapping[str, int],
        *,
        workers: Mapping[str, int],
        port: int | None,
        every: float = 0.5,
    ) -> None:
        self.pids = dict(pids)
        self.workers = dict(workers)
        self.port = port
        self.every = every
        self.readings: list[Reading] = []
        self.connections: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def _sample(self) -> None:
        self.readings.append(read(self.pids))
        if self.port is not None and self.workers:
            seen = procs.connections(self.workers, self.port)
            if sum(seen.values()) > sum(self.connections.values()):
                self.connections = seen

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self._sample()

    def start(self) -> None:
        self._sample()
        self._task = asyncio.create_task(self._loop(), name="cpu-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._sample()

    def phase(
        self,
        *,
        first_send: float,
        last_answer: float,
        last_accept: float | None,
        accepted: int,
        generator_cpu_s: float,
    ) -> PhaseCpu:
        """The figures of the phase that ran while this sampled. The generators' CPU is
        theirs for the whole phase (they measure themselves); over the selling window it is
        prorated by time."""
        found = PhaseCpu(accepted=accepted, connections=dict(self.connections))
        found.phase_s = used(self.readings, first_send, last_answer)
        found.phase_s["load-generator"] = generator_cpu_s
        if last_accept is not None and accepted:
            found.selling_s = used(self.readings, first_send, last_accept)
            span = last_answer - first_send
            share = (last_accept - first_send) / span if span > 0 else 1.0
            found.selling_s["load-generator"] = generator_cpu_s * min(1.0, share)
        return found
