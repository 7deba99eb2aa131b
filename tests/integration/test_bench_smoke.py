"""``flashorder-bench`` end to end on the real services, with very small numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = [pytest.mark.services, pytest.mark.slow]

EXE = str(Path(sys.executable).with_name("flashorder-bench"))


@pytest.fixture
def env(mariadb_url: str, redis_url: str, kafka_bootstrap: str) -> dict[str, str]:
    """The bench's environment: the suite's services, as `make bench` gives its own."""
    return {
        **os.environ,
        "FLASHORDER_DATABASE_URL": f"{mariadb_url}/flashorder",
        "FLASHORDER_REDIS_URL": redis_url,
        "FLASHORDER_KAFKA_BOOTSTRAP": kafka_bootstrap,
    }


def test_bench_runs_a_tiny_sale_and_every_promise_holds(
    tmp_path: Path, env: dict[str, str]
) -> None:
    command = [
        EXE,
        "--strategies", "reserve",
        "--requests", "120", "--stock", "30", "--users", "40",
        "--workers", "1", "--concurrency", "8",
        "--rates", "40", "--step-seconds", "1",
        "--redis-db", "11",
        "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "PASS: every promise held" in done.stdout

    (result,) = tmp_path.glob("*.json")
    assert result.with_suffix(".png").stat().st_size > 10_000
    run = orjson.loads(result.read_bytes())
    (reserve,) = run["strategies"]
    verdicts = {c["name"]: c["verdict"] for c in reserve["checks"]}
    assert verdicts["accepted <= stock (no oversell)"] == "PASS"
    assert verdicts["exactly one order.created per committed order (Kafka)"] == "PASS"
    assert verdicts["read model == write model"] == "PASS"
    assert "FAIL" not in verdicts.values()
    closed = reserve["closed"][0]["stats"]
    # 30 units, 1 or 2 per order: somewhere between 15 and 30 orders were accepted.
    assert 15 <= closed["accepted"] <= 30
    assert reserve["ceiling"]["stats"]["calls"] == 120
    assert reserve["open_steps"][0]["rate"] == 40
    assert {"api", "relay", "projector", "load-generator"} <= reserve["rss_peak"].keys()
    assert verdicts["hot sale sold out (available 0, accepted units == stock)"] == "PASS"
    assert verdicts["accepted orders at or above the floor of each phase"] == "PASS"

    # CPU per accepted order, per process of the stack, the stores found by their ports.
    cpu = reserve["closed"][0]["cpu"]
    assert cpu["accepted"] == closed["accepted"]
    # One worker: ``flashorder serve`` is one process, the API.
    assert {"api", "relay", "projector", "mariadb", "redis", "kafka"} <= cpu["selling_s"].keys()
    assert sum(cpu["selling_s"].values()) > 0
    assert run["headline"]["cpu_ms_per_order"]["reserve"] > 0
    assert "ms per accepted order" in done.stdout


def test_bench_watches_a_tiny_sale_with_pages_open_and_tracing_on(
    tmp_path: Path, env: dict[str, str]
) -> None:
    command = [
        EXE,
        "--strategies", "reserve",
        "--requests", "120", "--stock", "30", "--users", "40",
        "--workers", "1", "--concurrency", "8", "--warmup", "0",
        "--no-open-loop", "--no-ceiling",
        "--viewers", "3", "--tracing",
        "--redis-db", "11",
        "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "Side by side, reserve" in done.stdout

    (result,) = tmp_path.glob("*.json")
    (reserve,) = orjson.loads(result.read_bytes())["strategies"]
    verdicts = {c["name"]: c["verdict"] for c in reserve["checks"]}
    assert verdicts["open sale pages received frames of their sale (every viewer)"] == "PASS"
    assert verdicts["traced stack exported its spans over OTLP (the sink counted them)"] == "PASS"
    # The promises hold on the traced stack too, checked in its own stores.
    assert verdicts["tracing on: accepted <= stock (no oversell)"] == "PASS"
    assert verdicts["tracing on: read model == write model"] == "PASS"
    assert "FAIL" not in verdicts.values()
    watch = reserve["watch"]
    assert [r["variant"] for r in watch["rounds"]] == ["plain", "viewers", "traced"]
    (pages,) = (r["viewers"] for r in watch["rounds"] if r["variant"] == "viewers")
    assert len(pages) == 3
    assert all(p["frames"] > 0 for p in pages)
    assert watch["sink"]["spans"] > 0
    # The plain rounds alone are the closed-loop runs of the usual report.
    assert len(reserve["closed"]) == 1
    (traced,) = (r for r in watch["rounds"] if r["variant"] == "traced")
    assert "otlp-sink" in traced["record"]["cpu"]["selling_s"]


def test_bench_runs_a_tiny_queued_drop_both_ways_and_its_promises_hold(
    tmp_path: Path, env: dict[str, str]
) -> None:
    command = [
        EXE,
        "--scenario", "queue",
        "--strategies", "reserve",
        "--requests", "300", "--stock", "40",
        "--workers", "1", "--warmup", "0", "--prequeue", "3",
        "--redis-db", "12",
        "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert "The drop, without and with the queue" in done.stdout, done.stderr[-4000:]
    (result,) = tmp_path.glob("*.json")
    (reserve,) = orjson.loads(result.read_bytes())["strategies"]
    verdicts = {c["name"]: c["verdict"] for c in reserve["checks"]}
    # How fast the service answered depends on the machine; every promise must hold.
    paced = {n for n in verdicts if n.startswith(("with the queue:", "without the queue:"))}
    assert len(paced) == 2
    failed = {n: v for n, v in verdicts.items() if v == "FAIL" and n not in paced}
    assert not failed, done.stdout[-6000:]
    for name in (
        "hot sale sold out (available 0, accepted units == stock)",
        "nobody ordered twice (one order per buyer and product)",
        "queued product: each order by an admitted ticket, at most one per ticket",
        "every waiting ticket ends ORDERED or SOLD_OUT (and reads so afterwards)",
        "fair draw (admission order independent of join order; late joiners behind)",
    ):
        assert verdicts[name] == "PASS", name
    drop = reserve["drop"]
    assert drop["without"]["accepted"] == drop["queued"]["accepted"] == 40
    assert drop["queued"]["endings"] == {"SOLD_OUT": 260, "ORDERED": 40}
    assert drop["queued"]["order_calls"] == 40
    assert drop["without"]["order_calls"] == 300
