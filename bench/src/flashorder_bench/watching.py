"""What watching a sale costs (``--viewers N``, ``--tracing``): the hot sale in rounds that
alternate between the plain stack, the same stack with ``N`` open sale pages, and a second
stack started with tracing on (its spans exported over OTLP/HTTP to ``otlp_sink``), so that
a drift of the shared machine over the run weighs on every variant alike.

The rounds run in a mirrored order (plain, viewers, traced, then traced, viewers, plain, …):
a drift that grows steadily over the run cancels out of each variant's median. Each variant's
figures are the medians of its rounds; the CPU per accepted order of each process is the
figure to trust on a loaded machine (a busy neighbour slows the calls down, but barely moves
the CPU each order costs).

Two checks keep a comparison from passing by accident: the pages must have received frames
of their sale (a run whose viewers got nothing measured nothing), and the traced stack must
have exported spans.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from flashorder_bench.cpu import APART
from flashorder_bench.otlp_sink import SinkStats
from flashorder_bench.phase import PhaseRecord
from flashorder_bench.report import Check, format_table, number
from flashorder_bench.viewers import ViewerTally

Variant = Literal["plain", "viewers", "traced"]
VARIANTS: tuple[Variant, ...] = ("plain", "viewers", "traced")
#: A sale phase needs to last this long (seconds) for each page to owe a frame during it.
LIVE_SPAN_S = 3.0


def variants(viewers: int, tracing: bool) -> tuple[Variant, ...]:
    chosen: list[Variant] = ["plain"]
    if viewers > 0:
        chosen.append("viewers")
    if tracing:
        chosen.append("traced")
    return tuple(chosen)


def plan(viewers: int, tracing: bool, rounds: int) -> list[Variant]:
    """The order of the rounds: ``rounds`` of each variant, every other pass reversed."""
    base = variants(viewers, tracing)
    order: list[Variant] = []
    for n in range(rounds):
        order += base if n % 2 == 0 else tuple(reversed(base))
    return order


def label(variant: Variant, viewers: int) -> str:
    return {"plain": "plain", "viewers": f"{viewers} viewers", "traced": "tracing on"}[variant]


@dataclass
class WatchRound:
    variant: Variant
    record: PhaseRecord
    product_id: str
    #: ``viewers``: what each open page received.
    viewers: list[ViewerTally] = field(default_factory=list)
    #: The phase's first send and last answer (``time.monotonic()``, the clock of the pages'
    #: frames): the sale the pages watched.
    sale_start: float = 0.0
    sale_end: float = 0.0
    #: The machine's 1-minute load average when the round ended.
    load: float = 0.0
    #: ``traced``: what the sink received from the start of the round to its end (the batch
    #: processor sends every few seconds: a round's last spans may land in the next one).
    spans: SinkStats | None = None


@dataclass
class WatchResult:
    viewers: int
    tracing: bool
    rounds: list[WatchRound] = field(default_factory=list)
    #: Everything the sink received over the run, read once the traced stack had drained.
    sink: SinkStats | None = None

    def of(self, variant: Variant) -> list[WatchRound]:
        return [r for r in self.rounds if r.variant == variant]


def viewers_check(rounds: Sequence[WatchRound], expected: int) -> Check:
    """Every page of every viewers round opened as a stream, received frames, and its newest
    frame showed its sale over (the product sold out); when the sale lasted long enough,
    each page also received a frame while it ran."""
    name = "open sale pages received frames of their sale (every viewer)"
    watched = [r for r in rounds if r.variant == "viewers"]
    if not watched:
        return Check.of(name, False, "nothing to check: no viewers round")
    problems: list[str] = []
    frames: list[int] = []
    for n, r in enumerate(watched, 1):
        if len(r.viewers) != expected:
            problems.append(f"round {n}: {len(r.viewers)} pages opened of {expected}")
        lasted = r.sale_end - r.sale_start
        for v in r.viewers:
            during = v.frames_between(r.sale_start, r.sale_end)
            frames.append(v.frames)
            if v.error is not None and not v.frames:
                problems.append(f"round {n} page {v.index}: {v.error}")
            elif not v.history:
                problems.append(f"round {n} page {v.index}: no history event")
            elif v.frames == 0:
                problems.append(f"round {n} page {v.index}: no frame")
            elif lasted >= LIVE_SPAN_S and during == 0:
                problems.append(
                    f"round {n} page {v.index}: no frame during the {lasted:.1f}s sale "
                    f"({v.frames} outside it)"
                )
            elif not v.sold_out(r.product_id):
                problems.append(
                    f"round {n} page {v.index}: its newest frame does not show "
                    f"{r.product_id} sold out ({v.product})"
                )
    detail = "; ".join(problems[:3]) or (
        f"{len(frames)} pages over {len(watched)} round(s), {min(frames)}-{max(frames)} frames each"
    )
    return Check.of(name, not problems, detail)


def tracing_check(result: WatchResult) -> Check:
    """The traced stack exported spans to the sink (a run with tracing silently off fails),
    and nothing the sink received was malformed."""
    name = "traced stack exported its spans over OTLP (the sink counted them)"
    traced = result.of("traced")
    if not traced:
        return Check.of(name, False, "nothing to check: no traced round")
    sink = result.sink
    if sink is None:
        return Check.of(name, False, "the sink was never read")
    calls = sum(r.record.stats.order_calls for r in traced)
    passed = sink.spans > 0 and sink.rejected == 0
    detail = (
        f"{sink.spans:,} spans in {sink.exports:,} exports ({sink.bytes / 1024:,.0f} KiB) for "
        f"{calls:,} order calls: {sink.spans / calls if calls else 0:.1f} per call"
    )
    if sink.rejected:
        detail += f"; {sink.rejected} export(s) did not decode"
    return Check.of(name, passed, detail)


def _median(values: Sequence[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None


def _cpu(r: WatchRound) -> dict[str, float]:
    return r.record.cpu.ms_per_order() if r.record.cpu is not None else {}


def _process_order(name: str) -> tuple[int, str]:
    return (1 if name == "stack" else 2 if name in APART else 0), name


def side_by_side(result: WatchResult) -> str:
    """One column per variant (the medians of its rounds): throughput, latency, the CPU per
    accepted order of each process, and what the pages and the sink received."""
    chosen = [v for v in VARIANTS if result.of(v)]
    columns = [result.of(v) for v in chosen]
    headers = ["figure (median of rounds)"]
    headers += [f"{label(v, result.viewers)} ({len(result.of(v))} rounds)" for v in chosen]
    rows: list[list[str]] = []

    def row(title: str, values: Sequence[float | None], digits: int) -> None:
        rows.append([title, *(number(v, digits) for v in values)])

    def stat(pick: str) -> list[float | None]:
        out: list[float | None] = []
        for c in columns:
            vals: list[float | None] = []
            for r in c:
                st = r.record.stats
                vals.append(
                    {
                        "accepted/s": st.accepted_per_s,
                        "calls/s": st.order_calls_per_s,
                        "p50": st.order_latency.p50,
                        "p99": st.order_latency.p99,
                    }[pick]
                )
            out.append(_median(vals))
        return out

    row("accepted orders/s", stat("accepted/s"), 0)
    row("order calls/s", stat("calls/s"), 0)
    row("order call p50 ms", stat("p50"), 1)
    row("order call p99 ms", stat("p99"), 1)
    processes = sorted({p for c in columns for r in c for p in _cpu(r)}, key=_process_order)
    for p in processes:
        title = "CPU ms/accepted order: " + ("stack (sum)" if p == "stack" else p)
        row(title, [_median([_cpu(r).get(p) for r in c]) for c in columns], 3)
    for title, pick in (
        ("accepted orders/s ÷ plain's, same pass", _accepted_per_s),
        ("stack CPU ms/order ÷ plain's, same pass", _stack_ms),
    ):
        rows.append([title, *(number(_paired(result, v, pick), 2) for v in chosen)])
    frames = []
    for v, c in zip(chosen, columns, strict=True):
        if v != "viewers":
            frames.append("-")
            continue
        per_s = [
            t.frames_between(r.sale_start, r.sale_end) / (r.sale_end - r.sale_start)
            for r in c
            for t in r.viewers
            if r.sale_end > r.sale_start
        ]
        frames.append(f"{_median(per_s) or 0:.2f}" if per_s else "-")
    rows.append(["frames per page per s of sale", *frames])
    return format_table(headers, rows)


def _accepted_per_s(r: WatchRound) -> float | None:
    return r.record.stats.accepted_per_s


def _stack_ms(r: WatchRound) -> float | None:
    return _cpu(r).get("stack")


def _paired(
    result: WatchResult, variant: Variant, pick: Callable[[WatchRound], float | None]
) -> float | None:
    """The median over the passes (one round of each variant, run back to back) of the
    variant's figure over the plain round's of the same pass: neighbours in time share the
    machine's mood, which a median over the whole run does not cancel as well."""
    size = len(variants(result.viewers, result.tracing))
    ratios: list[float | None] = []
    for start in range(0, len(result.rounds), size):
        passed = {r.variant: pick(r) for r in result.rounds[start : start + size]}
        mine, plain = passed.get(variant), passed.get("plain")
        ratios.append(mine / plain if mine is not None and plain else None)
    return _median(ratios)


def rounds_table(result: WatchResult) -> str:
    """Each round in the order it ran: the drift shows here."""
    headers = ["round", "variant", "accepted/s", "calls/s", "p50 ms", "p99 ms",
               "stack CPU ms/order", "frames (min-max per page)", "spans", "load"]  # fmt: skip
    rows = []
    for n, r in enumerate(result.rounds, 1):
        st = r.record.stats
        counts = [t.frames for t in r.viewers]
        frames = f"{min(counts)}-{max(counts)}" if counts else "-"
        rows.append([
            str(n), label(r.variant, result.viewers), number(st.accepted_per_s),
            number(st.order_calls_per_s), number(st.order_latency.p50, 1),
            number(st.order_latency.p99, 1), number(_cpu(r).get("stack"), 3),
            frames, number(r.spans.spans) if r.spans else "-",
            number(r.load, 1),
        ])  # fmt: skip
    return format_table(headers, rows) if rows else "(no round)"
