"""CPU per accepted order and connections per worker, from /proc texts and readings."""

from __future__ import annotations

import os
import socket

import pytest

from flashorder_bench import procs
from flashorder_bench.cpu import PhaseCpu, ProcessSampler, Reading, used
from flashorder_bench.phase import PhaseRecord
from flashorder_bench.run import StrategyResult
from flashorder_bench.samples import ORDER, Samples
from flashorder_bench.stats import phase_stats, series
from flashorder_bench.summary import (
    connection_lines,
    cpu_table,
    echo_ms_per_call,
    parts_table,
    stack_ms_per_order,
)

# A /proc/<pid>/stat line whose command name holds a space and a parenthesis.
STAT = (
    "4242 (uvicorn (w) 1) S 1 4242 4242 0 -1 4194560 1000 0 0 0 "
    "250 50 7 3 20 0 4 0 100 1000000 5000 18446744073709551615"
)


def test_cpu_seconds_are_utime_stime_and_reaped_children() -> None:
    assert procs.parse_cpu_seconds(STAT) == pytest.approx((250 + 50 + 7 + 3) / procs.CLOCK_TICKS)


def test_own_cpu_is_read_and_a_gone_process_reads_none() -> None:
    assert (procs.cpu_seconds(os.getpid()) or 0) > 0
    assert procs.cpu_seconds(2**22 + 12345) is None


def test_cpu_used_is_interpolated_between_readings() -> None:
    readings = [
        Reading(10.0, {"api": 1.0, "relay": 0.5}),
        Reading(11.0, {"api": 2.0, "relay": 0.5}),
        Reading(12.0, {"api": 4.0, "relay": 1.5, "late": 0.2}),
    ]
    found = used(readings, 10.5, 12.0)
    assert found["api"] == pytest.approx(2.5)
    assert found["relay"] == pytest.approx(1.0)
    # A process first seen in the last reading used nothing measurable in the window.
    assert found["late"] == 0.0
    assert used(readings, 12.0, 12.0) == {}


def test_cpu_per_accepted_order_sums_the_stack_and_keeps_the_generator_apart() -> None:
    cpu = PhaseCpu(
        selling_s={"api-worker-1": 1.0, "mariadb": 0.5, "bench": 0.2, "load-generator": 2.0},
        accepted=500,
    )
    per = cpu.ms_per_order()
    assert per["api-worker-1"] == pytest.approx(2.0)
    assert per["stack"] == pytest.approx(3.0)  # 1.5 s over 500 orders, without the bench
    assert per["load-generator"] == pytest.approx(4.0)
    assert PhaseCpu(selling_s={"api": 1.0}, accepted=0).ms_per_order() == {}


def test_a_sampler_prorates_the_generator_over_the_selling_window() -> None:
    sampler = ProcessSampler({}, workers={}, port=None)
    sampler.readings = [Reading(0.0, {"api": 0.0}), Reading(10.0, {"api": 5.0})]
    cpu = sampler.phase(
        first_send=0.0, last_answer=10.0, last_accept=4.0, accepted=100, generator_cpu_s=3.0
    )
    assert cpu.selling_s["api"] == pytest.approx(2.0)
    assert cpu.phase_s["api"] == pytest.approx(5.0)
    assert cpu.selling_s["load-generator"] == pytest.approx(1.2)
    assert cpu.ms_per_order()["stack"] == pytest.approx(20.0)


def test_tcp_table_lines_give_port_state_and_inode() -> None:
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 "
        "       0 1234 1 0000000000000000 100 0 0 10 0\n"
        "   1: 0100007F:1F40 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000 "
        "       0 5678 1 0000000000000000 20 4 30 10 -1\n"
    )
    assert procs.parse_tcp(text) == [(8000, procs.LISTEN, 1234), (8000, procs.ESTABLISHED, 5678)]


def test_connections_are_counted_for_the_process_that_holds_them() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        accepted = [server.accept()[0] for _ in clients]
        try:
            assert procs.listener(port) == os.getpid()
            # This process holds both ends; the server's ends are the ones on ``port``.
            assert procs.connections({"me": os.getpid()}, port) == {"me": 3}
        finally:
            for s in clients + accepted:
                s.close()


def test_the_report_prints_cpu_per_order_per_process_and_the_split_over_workers() -> None:
    samples = Samples()
    samples.add(job=0, intended=0.0, start=0.0, end=0.1, status=201, kind=ORDER)
    cpu = PhaseCpu(
        phase_s={"api-worker-1": 1.5, "api-worker-2": 0.5, "load-generator": 1.0},
        selling_s={"api-worker-1": 1.0, "api-worker-2": 0.25, "load-generator": 0.5},
        accepted=250,
        connections={"api-worker-1": 57, "api-worker-2": 7},
    )
    run = PhaseRecord("closed", "closed", None, phase_stats(samples), series(samples), cpu=cpu)
    result = StrategyResult("reserve", "http://x", closed=[run])
    table = cpu_table([result])
    rows = {line.split("|")[2].strip(): line for line in table.splitlines()[2:]}
    assert "| 4.000 " in rows["api-worker-1"]
    assert "| 5.000 " in rows["stack (sum, not the two below)"]  # 1.25 s over 250 orders
    assert "| 2.000 " in rows["load-generator"]
    assert list(rows)[-1] == "load-generator"
    (line,) = connection_lines([result])
    assert line.endswith("api-worker-1 57, api-worker-2 7")
    assert stack_ms_per_order(result) == pytest.approx(5.0)


def _phase(name: str, cpu: PhaseCpu, calls: int) -> PhaseRecord:
    samples = Samples()
    for job in range(calls):
        samples.add(job=job, intended=0.0, start=0.0, end=0.1, status=201, kind=ORDER)
    return PhaseRecord(name, "closed", None, phase_stats(samples), series(samples), cpu=cpu)


def _parts(result: StrategyResult) -> dict[str, str]:
    """The parts table's rows: the part's name to its figure."""
    lines = parts_table([result]).splitlines()[2:]
    return {line.split("|")[2].strip(): line.split("|")[3].strip() for line in lines}


def test_the_parts_split_the_stack_into_front_order_work_event_path_and_stores() -> None:
    sale = PhaseCpu(
        selling_s={
            "api": 0.01,
            "api-worker-1": 0.5,
            "api-worker-2": 0.49,
            "relay": 0.1,
            "projector": 0.08,
            "mariadb": 0.3,
            "redis": 0.1,
            "kafka": 0.05,
            "expirer": 0.02,
            "load-generator": 0.4,
        },
        accepted=1000,
    )
    # The echo: 400 calls for 0.02 s of the API's CPU = 0.05 ms a call.
    echo = PhaseCpu(phase_s={"api-worker-1": 0.012, "api-worker-2": 0.008, "mariadb": 0.01})
    result = StrategyResult(
        "reserve", "http://x", closed=[_phase("run", sale, 1)], ceiling=_phase("echo", echo, 400)
    )

    assert echo_ms_per_call(result) == pytest.approx(0.05)
    rows = _parts(result)
    assert rows["HTTP front: the API's CPU per echo call"] == "0.050"
    assert rows["the order's own work in the API (the API less the front)"] == "0.950"
    assert rows["the API, whole"] == "1.000"
    assert rows["event path: relay, projector"] == "0.180"
    assert rows["stores: MariaDB, Redis, Kafka"] == "0.450"
    assert rows["other processes (the expirer)"] == "0.020"
    assert rows["stack"] == "1.650"  # the load generator is apart
    assert rows["before the order's own work (front, event path, stores)"] == "0.680"


def test_without_an_echo_phase_the_front_is_not_guessed() -> None:
    sale = PhaseCpu(selling_s={"api-worker-1": 0.5, "mariadb": 0.1}, accepted=500)
    result = StrategyResult("reserve", "http://x", closed=[_phase("run", sale, 1)])

    assert echo_ms_per_call(result) is None
    rows = _parts(result)
    assert rows["HTTP front: the API's CPU per echo call"] == "-"
    assert rows["the API, whole"] == "1.000"
    assert rows["before the order's own work (front, event path, stores)"] == "-"
