"""The cost-of-watching rounds of the bench (``--viewers``, ``--tracing``): their order, the
checks that keep a comparison from passing on nothing, and the side-by-side report."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from flashorder_bench import watching
from flashorder_bench.cpu import PhaseCpu
from flashorder_bench.otlp_sink import SinkStats
from flashorder_bench.phase import PhaseRecord
from flashorder_bench.samples import ORDER, Samples
from flashorder_bench.stats import phase_stats, series
from flashorder_bench.viewers import ViewerTally
from flashorder_bench.watching import WatchResult, WatchRound

PRODUCT = "Pabc-0"


def _record(accepted: int = 100, stack_s: float = 0.5, took: float = 0.02) -> PhaseRecord:
    samples = Samples()
    for n in range(accepted * 3):
        ok = n < accepted
        samples.add(
            job=n, intended=n * 0.01, start=n * 0.01, end=n * 0.01 + took,
            status=201 if ok else 409, kind=ORDER,
        )  # fmt: skip
    cpu = PhaseCpu(
        selling_s={"api": stack_s * 0.8, "relay": stack_s * 0.2, "bench": 0.3},
        accepted=accepted,
    )
    return PhaseRecord("closed", "closed", None, phase_stats(samples), series(samples), cpu=cpu)


def _page(index: int, *, frames: int = 6, sold_out: bool = True, at: float = 101.0) -> ViewerTally:
    product = {"productId": PRODUCT, "available": 0 if sold_out else 7, "sold": 50}
    return ViewerTally(
        index,
        status=200,
        content_type="text/event-stream",
        history=True,
        frames=frames,
        frame_at=[at + n for n in range(frames)],
        product=product if frames else None,
    )


def _viewers_round(*pages: ViewerTally, start: float = 100.0, end: float = 104.0) -> WatchRound:
    return WatchRound(
        "viewers", _record(), PRODUCT, viewers=list(pages), sale_start=start, sale_end=end
    )


def test_rounds_alternate_in_a_mirrored_order_with_as_many_of_each_variant() -> None:
    order = watching.plan(12, True, 3)
    assert order == [
        "plain", "viewers", "traced",
        "traced", "viewers", "plain",
        "plain", "viewers", "traced",
    ]  # fmt: skip
    assert Counter(order) == {"plain": 3, "viewers": 3, "traced": 3}
    assert watching.plan(0, False, 2) == ["plain", "plain"]
    assert watching.plan(4, False, 2) == ["plain", "viewers", "viewers", "plain"]


def test_viewers_check_passes_when_every_page_watched_the_sale_sell_out() -> None:
    check = watching.viewers_check([_viewers_round(_page(0), _page(1))], expected=2)
    assert check.verdict == "PASS", check.detail
    assert "2 pages over 1 round(s), 6-6 frames each" in check.detail


@pytest.mark.parametrize(
    ("pages", "why"),
    [
        ((_page(0), _page(1, frames=0)), "page 1: no frame"),
        ((_page(0),), "1 pages opened of 2"),
        ((_page(0), replace(_page(1, frames=0), error="answered 401", history=False)), "401"),
        ((_page(0), replace(_page(1), history=False)), "no history event"),
        ((_page(0), _page(1, at=110.0)), "no frame during the 4.0s sale"),
        ((_page(0), _page(1, sold_out=False)), "does not show Pabc-0 sold out"),
    ],
)
def test_viewers_check_fails_when_a_page_did_not_watch(
    pages: tuple[ViewerTally, ...], why: str
) -> None:
    check = watching.viewers_check([_viewers_round(*pages)], expected=2)
    assert check.verdict == "FAIL"
    assert why in check.detail


def test_viewers_check_fails_on_a_run_without_viewers_rounds() -> None:
    plain = WatchRound("plain", _record(), PRODUCT)
    assert watching.viewers_check([plain], expected=12).verdict == "FAIL"


def test_a_short_sale_owes_no_frame_while_it_ran_only_one_after() -> None:
    # A sale of half a second may fall between two ticks of the once-a-second sampler.
    short = _viewers_round(_page(0, at=105.0), start=100.0, end=100.5)
    assert watching.viewers_check([short], expected=1).verdict == "PASS"


def _traced(sink: SinkStats | None) -> WatchResult:
    result = WatchResult(viewers=0, tracing=True, sink=sink)
    result.rounds = [WatchRound("plain", _record(), PRODUCT), WatchRound("traced", _record(), "P")]
    return result


def test_tracing_check_passes_when_the_sink_counted_spans() -> None:
    check = watching.tracing_check(_traced(SinkStats(exports=3, spans=900, bytes=2048)))
    assert check.verdict == "PASS", check.detail
    assert "900 spans in 3 exports" in check.detail
    assert "for 300 order calls: 3.0 per call" in check.detail


@pytest.mark.parametrize(
    "sink",
    [SinkStats(), SinkStats(exports=2, spans=10, bytes=100, rejected=1), None],
)
def test_tracing_check_fails_when_no_span_arrived_or_one_was_malformed(
    sink: SinkStats | None,
) -> None:
    assert watching.tracing_check(_traced(sink)).verdict == "FAIL"


def test_tracing_check_fails_on_a_run_without_traced_rounds() -> None:
    result = WatchResult(viewers=0, tracing=True, sink=SinkStats(spans=5))
    assert watching.tracing_check(result).verdict == "FAIL"


def test_the_report_sets_the_variants_side_by_side_as_medians_of_their_rounds() -> None:
    result = WatchResult(viewers=12, tracing=True)
    result.rounds = [
        WatchRound("plain", _record(stack_s=0.5), PRODUCT, load=3.0),
        _viewers_round(_page(0), _page(1)),
        WatchRound("traced", _record(stack_s=0.9), PRODUCT, spans=SinkStats(1, 400, 10)),
        WatchRound("traced", _record(stack_s=0.7), PRODUCT),
        _viewers_round(_page(0), _page(1)),
        WatchRound("plain", _record(stack_s=0.6), PRODUCT),
    ]
    table = watching.side_by_side(result)
    lines = table.splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == [
        "figure (median of rounds)", "plain (2 rounds)", "12 viewers (2 rounds)",
        "tracing on (2 rounds)",
    ]  # fmt: skip
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in lines[2:]}
    # Stack CPU per accepted order: plain (5.0 + 6.0) / 2, tracing (9.0 + 7.0) / 2 ms.
    stack = [c.strip() for c in rows["CPU ms/accepted order: stack (sum)"]]
    assert stack == ["5.500", "5.000", "8.000"]
    assert [c.strip() for c in rows["CPU ms/accepted order: bench"]] == ["3.000"] * 3
    # Each pass against its own plain round: viewers 5.0/5.0 and 5.0/6.0, tracing 9.0/5.0
    # and 7.0/6.0.
    paired = [c.strip() for c in rows["stack CPU ms/order ÷ plain's, same pass"]]
    assert paired == ["1.00", "0.92", "1.48"]
    # The pages' frames: 4 of 6 inside the 4 s sale (101, 102, 103, 104).
    assert [c.strip() for c in rows["frames per page per s of sale"]] == ["-", "1.00", "-"]
    assert list(rows).index("CPU ms/accepted order: stack (sum)") < list(rows).index(
        "CPU ms/accepted order: bench"
    )
    rounds = watching.rounds_table(result).splitlines()
    assert len(rounds) == 2 + 6
    assert "| tracing on " in rounds[4]
    assert "| 400 " in rounds[4]
    assert "| 6-6 " in rounds[3]
