"""Merging the generators' samples, and what a run writes and prints."""

from __future__ import annotations

import math

import orjson

from flashorder_bench.procs import leak_report, parse_status
from flashorder_bench.report import Check, failed, format_checks, format_table, number, ratio
from flashorder_bench.results import dumps
from flashorder_bench.samples import ORDER, Samples, merge
from flashorder_bench.stats import Latency
from flashorder_bench.wrk import lua_script, parse


def _part(jobs: list[int], order_ids: dict[int, str], rss: int) -> Samples:
    s = Samples()
    for job in jobs:
        s.add(
            job=job,
            intended=float(job),
            start=float(job),
            end=job + 0.1,
            status=201,
            kind=ORDER,
            order_id=order_ids.get(job),
        )
    s.errors["ClientOSError"] = 1
    s.generator_rss_kb.append(rss)
    return s


def test_merge_keeps_every_call_and_reindexes_the_order_ids() -> None:
    a = _part([0, 2], {0: "o-0", 2: "o-2"}, 100)
    b = _part([1, 3], {3: "o-3"}, 200)
    merged = merge([a, b])
    assert len(merged) == 4
    assert list(merged.job) == [0, 2, 1, 3]
    # Index 3 of the merged samples is b's second call.
    assert merged.order_ids == {0: "o-0", 1: "o-2", 3: "o-3"}
    assert merged.errors == {"ClientOSError": 2}
    assert merged.generator_rss_kb == [100, 200]


def test_merge_of_nothing_is_empty() -> None:
    assert len(merge([])) == 0


def test_check_lines_align_and_count_each_verdict() -> None:
    checks = [
        Check.of("accepted <= stock", True, "5,000 of 5,000"),
        Check.of("read model == write model", False, "order o-1: view None"),
        Check.skipped("one order per Idempotency-Key", "retry scenario only"),
    ]
    text = format_checks(checks, title="Promises, reserve:")
    assert text.splitlines() == [
        "Promises, reserve:",
        "  PASS  accepted <= stock              5,000 of 5,000",
        "  FAIL  read model == write model      order o-1: view None",
        "  SKIP  one order per Idempotency-Key  retry scenario only",
        "  1 pass, 1 fail, 1 skip",
    ]
    assert failed(checks) == [checks[1]]


def test_table_is_markdown_with_padded_columns() -> None:
    text = format_table(["a", "bbb"], [["1", "2"], ["333", "4"]])
    assert text.splitlines() == ["| a   | bbb |", "|-----|-----|", "| 1   | 2   |", "| 333 | 4   |"]


def test_numbers_in_tables() -> None:
    assert number(12345.678) == "12,346"
    assert number(1.25, 1) == "1.2"
    assert number(None) == "-"
    assert number(math.nan) == "-"
    assert ratio(10.0, 2.0) == 5.0
    assert ratio(10.0, 0.0) is None
    assert ratio(None, 2.0) is None


def test_results_write_nan_as_null_and_sets_as_lists() -> None:
    payload = {"latency": Latency.of([]), "ids": {"b", "a"}}
    back = orjson.loads(dumps(payload))
    assert back["latency"]["p99"] is None
    assert back["ids"] == ["a", "b"]


def test_proc_status_fields_in_kb() -> None:
    text = "Name:\tpython\nVmHWM:\t  51234 kB\nVmRSS:\t  40000 kB\nThreads:\t4\n"
    assert parse_status(text) == {"VmHWM": 51234, "VmRSS": 40000}


def test_leak_check_allows_ten_percent_over_the_first_run() -> None:
    runs = [{"api": 1000, "relay": 500}, {"api": 1100, "relay": 500}, {"api": 1050}]
    assert leak_report(runs) == (True, [])
    grown = [{"api": 1000}, {"api": 1101}]
    ok, lines = leak_report(grown)
    assert not ok
    assert lines == ["api: 1000 kB after run 1, 1101 kB after run 2"]


def test_wrk_script_posts_the_body_with_its_headers() -> None:
    script = lua_script(b'{"userId":"u"}', {"Authorization": "Bearer t"})
    assert 'wrk.method = "POST"' in script
    assert 'wrk.body = "{\\"userId\\":\\"u\\"}"' in script
    assert 'wrk.headers["Authorization"] = "Bearer t"' in script


WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:8000/api/v1/bench/echo-order
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.51ms    1.20ms  20.00ms   80.00%
  89470 requests in 5.00s, 27.39MB read
  Non-2xx or 3xx responses: 12
Requests/sec:  17894.00
Transfer/sec:      5.48MB
"""


def test_wrk_output_gives_the_calls_their_time_and_the_non_2xx() -> None:
    run = parse(WRK_OUTPUT)
    assert run is not None
    assert (run.calls, run.seconds, run.non_2xx) == (89470, 5.0, 12)
    assert run.per_s == 17894.0
    assert run.ms_per_call() is None  # no CPU read
    assert parse(WRK_OUTPUT.replace("Non-2xx or 3xx responses: 12\n", "")).non_2xx == 0  # type: ignore[union-attr]
    assert parse("  120 requests in 500.00ms, 1MB read").seconds == 0.5  # type: ignore[union-attr]
    assert parse("unable to connect to 127.0.0.1:8000 Connection refused") is None
