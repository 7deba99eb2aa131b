"""Raw samples: one record per HTTP call, as compact arrays that cross process boundaries.

Times are ``time.monotonic()`` readings: CLOCK_MONOTONIC is one clock for every process of
the machine, so the samples of several generator processes merge onto one time axis.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

#: What a call was (``Samples.kind``).
ORDER, GET_PRODUCT, GET_ORDER, ECHO, QUEUE_JOIN, QUEUE_POLL = 0, 1, 2, 3, 4, 5
KIND_NAMES = {
    ORDER: "order",
    GET_PRODUCT: "get-product",
    GET_ORDER: "get-order",
    ECHO: "echo",
    QUEUE_JOIN: "queue-join",
    QUEUE_POLL: "queue-poll",
}

#: ``Samples.status`` of a call that got no HTTP answer (refused, reset, timed out).
TRANSPORT_ERROR = 0


@dataclass
class Samples:
    """The calls one generator made, in the order they finished.

    ``intended`` is when the call was due: the send time in a closed loop, the schedule's time
    in an open loop (so that queueing before the send counts in the latency). ``order_ids``
    maps a call's index to the ``orderId`` its 2xx answer named.
    """

    job: array[int] = field(default_factory=lambda: array("q"))
    intended: array[float] = field(default_factory=lambda: array("d"))
    start: array[float] = field(default_factory=lambda: array("d"))
    end: array[float] = field(default_factory=lambda: array("d"))
    status: array[int] = field(default_factory=lambda: array("h"))
    kind: array[int] = field(default_factory=lambda: array("b"))
    order_ids: dict[int, str] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    #: Peak resident memory of each generator process, kB (``VmHWM``).
    generator_rss_kb: list[int] = field(default_factory=list)
    #: CPU seconds (user and system) each generator process spent driving the phase.
    generator_cpu_s: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.end)

    def add(
        self,
        *,
        job: int,
        intended: float,
        start: float,
        end: float,
        status: int,
        kind: int,
        order_id: str | None = None,
        error: str | None = None,
    ) -> None:
        if order_id is not None:
            self.order_ids[len(self.end)] = order_id
        if error is not None:
            self.errors[error] = self.errors.get(error, 0) + 1
        self.job.append(job)
        self.intended.append(intended)
        self.start.append(start)
        self.end.append(end)
        self.status.append(status)
        self.kind.append(kind)


def merge(parts: Sequence[Samples]) -> Samples:
    """One ``Samples`` of several generators' parts, in the order of the parts."""
    merged = Samples()
    for part in parts:
        offset = len(merged)
        merged.job.extend(part.job)
        merged.intended.extend(part.intended)
        merged.start.extend(part.start)
        merged.end.extend(part.end)
        merged.status.extend(part.status)
        merged.kind.extend(part.kind)
        merged.order_ids.update({offset + i: oid for i, oid in part.order_ids.items()})
        for name, count in part.errors.items():
            merged.errors[name] = merged.errors.get(name, 0) + count
        merged.generator_rss_kb.extend(part.generator_rss_kb)
        merged.generator_cpu_s.extend(part.generator_cpu_s)
    return merged
