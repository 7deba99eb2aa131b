"""The figures that count, from the strategies' results: ratios within one run, and the
tables printed at the end and pasted into ``docs/benchmarks.md``."""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from flashorder_bench.cpu import APART, PhaseCpu
from flashorder_bench.drop import DropSide
from flashorder_bench.phase import PhaseRecord
from flashorder_bench.procs import is_api
from flashorder_bench.report import format_table, number, ratio
from flashorder_bench.run import StrategyResult


@dataclass(frozen=True, slots=True)
class Headline:
    """``accepted_ratio``: default ÷ lock accepted orders/s (median of the runs);
    ``ceiling_share``: default order calls/s ÷ echo calls/s on the same workers;
    ``selling_share``: default accepted orders/s ÷ echo calls/s. A hot sale's calls are
    mostly refusals once it sold out, and a refusal is cheaper than the echo, so the calls
    can outrun the ceiling; accepted orders/s counts the selling window only (first send to
    last acceptance), where nearly every call is an order taken."""

    accepted_ratio: float | None
    ceiling_share: float | None
    selling_share: float | None
    generator_ok: bool | None
    best_open_rate: dict[str, float | None]
    #: CPU of the whole stack per accepted order, ms (median of the closed-loop runs).
    cpu_ms_per_order: dict[str, float | None]


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def accepted_per_s(result: StrategyResult) -> float | None:
    return _median([p.stats.accepted_per_s for p in result.closed])


def headline(results: Sequence[StrategyResult]) -> Headline:
    by = {r.strategy: r for r in results}
    default = by.get("reserve") or (results[0] if results else None)
    lock = by.get("lock")
    accepted = ratio(
        accepted_per_s(default) if default else None, accepted_per_s(lock) if lock else None
    )
    share: float | None = None
    selling: float | None = None
    generator_ok: bool | None = None
    if default is not None and default.ceiling is not None and default.closed:
        calls = _median([p.stats.order_calls_per_s for p in default.closed])
        echo = default.ceiling.stats.answers_per_s
        share = ratio(calls, echo)
        selling = ratio(accepted_per_s(default), echo)
        generator_ok = calls is not None and echo > calls
    return Headline(
        accepted_ratio=accepted,
        ceiling_share=share,
        selling_share=selling,
        generator_ok=generator_ok,
        best_open_rate={r.strategy: r.best_open_rate for r in results},
        cpu_ms_per_order={r.strategy: stack_ms_per_order(r) for r in results},
    )


def stack_ms_per_order(result: StrategyResult) -> float | None:
    per = [p.cpu.ms_per_order().get("stack") for p in result.closed if p.cpu is not None]
    return _median([v for v in per if v is not None])


def _process_order(label: str) -> tuple[int, str]:
    """The stack's processes first (API, relay, projector, then the stores), the sum, then
    the processes apart (the bench, the load generator)."""
    if label == "stack":
        return 1, ""
    return (2 if label in APART else 0), label


def _first_runs(results: Sequence[StrategyResult]) -> Iterator[tuple[StrategyResult, PhaseCpu]]:
    """Each strategy with the CPU of its first closed-loop run, if that run sold."""
    for r in results:
        cpu = r.closed[0].cpu if r.closed else None
        if cpu is not None and cpu.accepted:
            yield r, cpu


def cpu_table(results: Sequence[StrategyResult]) -> str:
    """CPU per accepted order of every process over the first closed-loop run's selling
    window (first send to last acceptance), and over the whole run."""
    headers = ["strategy", "process", "CPU s selling", "ms per accepted order", "CPU s run"]
    rows = []
    for r, cpu in _first_runs(results):
        per = cpu.ms_per_order()
        for label in sorted(per, key=_process_order):
            selling = cpu.stack_selling_s() if label == "stack" else cpu.selling_s.get(label)
            whole = (
                sum(s for k, s in cpu.phase_s.items() if k not in APART)
                if label == "stack"
                else cpu.phase_s.get(label)
            )
            name = "stack (sum, not the two below)" if label == "stack" else label
            rows.append(
                [r.strategy, name, number(selling, 2), number(per[label], 3), number(whole, 2)]
            )
    return format_table(headers, rows) if rows else "(no CPU figures)"


#: The parts of the stack outside the API, by process label.
EVENT_PATH = ("relay", "projector")
STORES = ("mariadb", "redis", "kafka")


def echo_ms_per_call(result: StrategyResult) -> float | None:
    """The API's CPU per echo call (the ceiling phase: the HTTP stack, the token check and
    the body's validation, no store), ms; None without a ceiling phase."""
    echo = result.ceiling
    if echo is None or echo.cpu is None or not echo.stats.calls:
        return None
    api = sum(s for label, s in echo.cpu.phase_s.items() if is_api(label))
    return 1000 * api / echo.stats.calls


def parts_table(results: Sequence[StrategyResult]) -> str:
    """The stack's CPU per accepted order (the first closed-loop run) in parts: the HTTP
    front (what the API spends on an echo call), the order's own work in the API (the rest
    of the API's), the event path, the stores, the other processes. The front, the event
    path and the stores are what an order costs before any of its own code runs."""
    headers = ["strategy", "part", "ms per accepted order"]
    rows = []
    for r, cpu in _first_runs(results):
        per = cpu.ms_per_order()
        api = sum(ms for label, ms in per.items() if is_api(label))
        events = sum(per.get(label, 0.0) for label in EVENT_PATH)
        stores = sum(per.get(label, 0.0) for label in STORES)
        # Rounding of the interpolated readings can leave a hair below zero.
        other = max(0.0, per["stack"] - api - events - stores)
        front = echo_ms_per_call(r)
        parts: list[tuple[str, float | None]] = [
            ("HTTP front: the API's CPU per echo call", front),
            ("the order's own work in the API (the API less the front)", _less(api, front)),
            ("the API, whole", api),
            ("event path: relay, projector", events),
            ("stores: MariaDB, Redis, Kafka", stores),
            ("other processes (the expirer)", other),
            ("stack", per["stack"]),
            (
                "before the order's own work (front, event path, stores)",
                None if front is None else front + events + stores,
            ),
        ]
        rows += [[r.strategy, name, number(ms, 3)] for name, ms in parts]
    return format_table(headers, rows) if rows else "(no CPU figures)"


def _less(whole: float, part: float | None) -> float | None:
    return None if part is None else whole - part


def wrk_lines(result: StrategyResult) -> list[str]:
    """``--wrk``: the echo route under wrk against our generator, with the API's CPU per
    call, and the bare ASGI app beside it: the least a Python HTTP front costs here."""
    lines = []
    echo, bare = result.wrk_echo, result.wrk_bare
    if echo is not None:
        ours = result.ceiling.stats.answers_per_s if result.ceiling is not None else None
        lines.append(
            f"{result.strategy}: echo route, wrk {echo.per_s:,.0f}/s vs ours {number(ours)}/s; "
            f"under wrk the API spent {number(echo.ms_per_call(), 3)} ms of CPU a call"
            + (f" ({echo.non_2xx:,} not 2xx)" if echo.non_2xx else "")
        )
    if bare is not None:
        lines.append(
            f"{result.strategy}: a bare ASGI app under uvicorn, the same workers, wrk: "
            f"{bare.per_s:,.0f}/s, {number(bare.ms_per_call(), 3)} ms of CPU a call "
            "(the least a Python HTTP front costs here)"
            + (f" ({bare.non_2xx:,} not 2xx)" if bare.non_2xx else "")
        )
    return lines


def connection_lines(results: Sequence[StrategyResult]) -> list[str]:
    """How the closed loop's connections spread over the API workers (most seen at once)."""
    lines = []
    for r in results:
        for phase in r.closed[:1]:
            seen = phase.cpu.connections if phase.cpu is not None else {}
            if seen:
                split = ", ".join(f"{label} {n}" for label, n in sorted(seen.items()))
                lines.append(f"{r.strategy}: connections per API worker ({phase.name}): {split}")
    return lines


def _row(strategy: str, phase: PhaseRecord, *, echo: bool = False) -> list[str]:
    st = phase.stats
    lat = st.latency if echo else st.order_latency
    return [
        strategy,
        phase.name.split(", ")[-1] if not echo else "ceiling (echo)",
        number(st.calls),
        number(st.busy_s, 1),
        number(st.answers_per_s),
        "-" if echo else number(st.accepted),
        "-" if echo else number(st.accepted_per_s),
        number(lat.p50, 1),
        number(lat.p90, 1),
        number(lat.p99, 1),
        number(lat.p999, 1),
        number(lat.max, 1),
        number(st.server_errors + st.transport_errors),
    ]


def closed_table(results: Sequence[StrategyResult]) -> str:
    headers = [
        "strategy", "phase", "calls", "s", "calls/s", "accepted", "accepted/s",
        "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors",
    ]  # fmt: skip
    rows = []
    for r in results:
        rows += [_row(r.strategy, p) for p in r.closed]
        if r.ceiling is not None:
            rows.append(_row(r.strategy, r.ceiling, echo=True))
    return format_table(headers, rows) if rows else "(no closed-loop phase)"


def open_table(results: Sequence[StrategyResult], p99_limit_ms: float) -> str:
    # The accepted orders apart: on a hot product they are the step's first calls (its
    # stock sells within a fraction of a second), and the refusals after them are fast.
    headers = ["strategy", "offered/s", "answered/s", "p50 ms", "p99 ms", "max ms",
               "accepted", "accepted p50 ms", "accepted p99 ms",
               "send lag p99 ms", "errors", f"p99 <= {p99_limit_ms:g} ms"]  # fmt: skip
    rows = []
    for r in results:
        for step in r.open_steps:
            st = step.stats
            errors = st.server_errors + st.transport_errors
            holds = errors == 0 and st.latency.p99 <= p99_limit_ms
            took = st.accepted_latency
            rows.append([
                r.strategy, number(step.rate), number(st.answers_per_s),
                number(st.latency.p50, 1), number(st.latency.p99, 1), number(st.latency.max, 1),
                number(st.accepted), number(took.p50, 1), number(took.p99, 1),
                number(st.send_lag.p99, 1), number(errors), "yes" if holds else "no",
            ])  # fmt: skip
    return format_table(headers, rows) if rows else "(no open-loop step)"


def memory_table(results: Sequence[StrategyResult]) -> str:
    headers = ["strategy", "process", "peak RSS MiB", "RSS after each run MiB"]
    rows = []
    for r in results:
        for label, peak in sorted(r.rss_peak.items()):
            after = " / ".join(
                number(run[label] / 1024, 1) for run in r.rss_after_runs if label in run
            )
            rows.append([r.strategy, label, number(peak / 1024, 1), after or "-"])
    return format_table(headers, rows) if rows else "(no memory figures)"


def headline_lines(h: Headline, results: Sequence[StrategyResult]) -> list[str]:
    lines = []
    if h.accepted_ratio is not None:
        lines.append(f"accepted orders/s, default ÷ lock: {h.accepted_ratio:.1f}x")
    if h.ceiling_share is not None:
        lines.append(f"default order calls/s ÷ echo ceiling: {h.ceiling_share:.0%}")
    if h.selling_share is not None:
        lines.append(
            f"default accepted orders/s (the selling regime) ÷ echo ceiling: {h.selling_share:.0%}"
        )
    if h.generator_ok is not None:
        verdict = "yes" if h.generator_ok else "NO: the figures may be the generator's"
        lines.append(f"generator drives the echo route faster than the orders: {verdict}")
    for r in results:
        lines += wrk_lines(r)
    for r in results:
        lines.append(
            f"{r.strategy}: load average {r.load_before:.1f} before, {r.load_after:.1f} after "
            f"the load phases (nproc {os.cpu_count()}; higher than the stack's own means "
            "a neighbour shared the CPUs)"
        )
    stepped = {r.strategy for r in results if r.open_steps}
    for strategy, rate in h.best_open_rate.items():
        if strategy not in stepped:
            continue
        shown = f"{rate:,.0f}/s" if rate is not None else "none of the rates tried"
        lines.append(f"{strategy}: highest open-loop rate with p99 within limit: {shown}")
    return lines


def drop_tables(results: Sequence[StrategyResult]) -> list[str]:
    """The queued drop: both sides' order calls, then the queue's own figures."""
    orders, queue = [], []
    for r in results:
        if r.drop is None:
            continue
        for side in (r.drop.without, r.drop.queued):
            lat = side.order_latency
            orders.append([
                r.strategy, side.name, number(side.buyers), number(side.order_calls),
                number(side.accepted), number(side.units), number(side.accepted_per_s),
                number(lat.p50, 1), number(lat.p99, 1), number(lat.max, 1),
                number(side.peak_in_flight), number(side.server_errors),
                number(side.deadline_503), number(side.transport_errors),
            ])  # fmt: skip
        queue.append(_queue_row(r.strategy, r.drop.queued, r.drop.admission_per_second))
    if not orders:
        return []
    order_headers = [
        "strategy", "side", "buyers", "order calls", "accepted", "units", "accepted/s",
        "p50 ms", "p99 ms", "max ms", "most in flight", "5xx", "503 deadline", "timeouts",
    ]  # fmt: skip
    queue_headers = [
        "strategy", "admission/s asked", "admitted", "admitted/s", "wait p50 s", "wait p90 s",
        "wait p99 s", "sold-out told p50 s", "p99 s", "queue calls", "their p99 ms", "ends",
    ]  # fmt: skip
    return [format_table(order_headers, orders), format_table(queue_headers, queue)]


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def _queue_row(strategy: str, side: DropSide, asked: float | None) -> list[str]:
    wait, told, calls = side.wait, side.sold_out_notice, side.queue_latency
    ends = ", ".join(f"{end} {n:,}" for end, n in side.endings.items())
    return [
        strategy,
        number(asked) if asked is not None else "auto",
        number(side.admitted),
        number(side.admitted_per_s, 1),
        number(_seconds(wait.p50 if wait else None), 2),
        number(_seconds(wait.p90 if wait else None), 2),
        number(_seconds(wait.p99 if wait else None), 2),
        number(_seconds(told.p50 if told else None), 2),
        number(_seconds(told.p99 if told else None), 2),
        number(side.queue_calls),
        number(calls.p99 if calls else None, 1),
        ends or "-",
    ]
