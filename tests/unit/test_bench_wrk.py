"""The bench's HTTP floor: the bare ASGI app, and how the wrk runs are reported."""

from __future__ import annotations

import shutil
from typing import Any

import orjson
import pytest

from flashorder_bench import bare, wrk
from flashorder_bench.run import StrategyResult
from flashorder_bench.summary import wrk_lines


async def test_the_bare_app_reads_the_whole_body_and_answers_201() -> None:
    chunks: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"a":', "more_body": True},
        {"type": "http.request", "body": b"1}", "more_body": False},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await bare.app({"type": "http", "method": "POST", "path": "/"}, receive, send)

    assert chunks == []  # both parts read
    start, body = sent
    assert start["status"] == 201
    assert (b"content-length", str(len(bare.ANSWER)).encode()) in start["headers"]
    assert orjson.loads(body["body"])["status"] == "CREATED"


async def test_the_bare_app_completes_its_lifespan() -> None:
    events = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return events.pop(0)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    await bare.app({"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_the_wrk_lines_give_the_cpu_per_call_of_the_echo_and_of_the_bare_app() -> None:
    result = StrategyResult("reserve", "http://x")
    result.wrk_echo = wrk.WrkRun(calls=90_000, seconds=5.0, non_2xx=0, server_cpu_s=7.74)
    result.wrk_bare = wrk.WrkRun(calls=200_000, seconds=5.0, non_2xx=3, server_cpu_s=6.2)

    echo, floor = wrk_lines(result)

    assert echo == (
        "reserve: echo route, wrk 18,000/s vs ours -/s; under wrk the API spent 0.086 ms of "
        "CPU a call"
    )
    assert floor.startswith("reserve: a bare ASGI app under uvicorn, the same workers, wrk: ")
    assert "40,000/s, 0.031 ms of CPU a call" in floor
    assert floor.endswith("(3 not 2xx)")
    assert wrk_lines(StrategyResult("lock", "http://x")) == []


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
async def test_wrk_drives_the_bare_app_and_reads_its_cpu() -> None:
    run = await wrk.bare_front(b'{"userId":"u"}', workers=1, connections=8, seconds=1)

    assert run is not None
    assert run.calls > 100
    assert run.non_2xx == 0
    assert run.server_cpu_s is not None
    assert run.server_cpu_s > 0
