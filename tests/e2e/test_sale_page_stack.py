"""The sale page and the metrics on the full stack: two API workers whose figures add up."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest

from flashorder_bench.stack import Stack
from tests.support.api import HttpApi
from tests.support.calls import new_product, new_queued_product, order_body

pytestmark = pytest.mark.services


async def scrape(api: HttpApi) -> str:
    async with api.session.get(api.base + "/metrics") as reply:
        assert reply.status == 200
        return await reply.text()


def order_calls(text: str, outcome: str) -> float:
    """The order route's calls of one outcome, over every status line."""
    pattern = (
        rf'flashorder_http_requests_total\{{method="POST",outcome="{re.escape(outcome)}",'
        r'route="/api/v1/orders",status="\d+"\} (\S+)'
    )
    return sum(float(n) for n in re.findall(pattern, text))


async def sale(api: HttpApi, pid: str, users: int, *, per_user: int = 1) -> list[int]:
    """``users`` buyers, each ``per_user`` orders, all at once over fresh connections (so that
    both workers take some)."""

    async def one(user: str) -> int:
        body = orjson.dumps(order_body(user, (pid, 1, 10050)))
        headers = {"content-type": "application/json", "Authorization": f"Bearer {api.token(user)}"}
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh,
            fresh.post(api.base + "/api/v1/orders", data=body, headers=headers) as reply,
        ):
            return reply.status

    return await asyncio.gather(
        *(one(f"w{u}_{pid[-6:]}") for u in range(users) for _ in range(per_user))
    )


async def test_two_workers_metrics_add_up_to_every_call(stack_api: HttpApi) -> None:
    pid = await new_product(stack_api, stock=60, max_per_user=1)
    before = await scrape(stack_api)
    statuses = await sale(stack_api, pid, 80)
    assert statuses.count(201) == 60
    assert statuses.count(409) == 20
    # Each scrape is answered by one worker or the other; each counts both workers' calls.
    for _ in range(4):
        after = await scrape(stack_api)
        assert order_calls(after, "ok") - order_calls(before, "ok") == 60
        assert order_calls(after, "sold-out") - order_calls(before, "sold-out") == 20
    # The event loop's lag is reported per worker: both workers are there.
    pids = set(re.findall(r'flashorder_event_loop_lag_seconds\{pid="(\d+)"\}', after))
    assert len(pids) == 2
    # The database's figures of the product and the outbox, as the scrape read them.
    assert f'flashorder_product_stock_units{{product_id="{pid}",state="available"}} 0.0' in after
    assert f'flashorder_product_orders{{product_id="{pid}",status="CREATED"}} 60.0' in after
    assert re.search(r'flashorder_redis_pool_connections\{state="limit"\} (\d+)', after)


async def test_sale_stream_sends_history_then_a_frame_a_second(stack_api: HttpApi) -> None:
    pid = await new_product(stack_api, stock=10, max_per_user=1)
    headers = {
        "accept": "text/event-stream",
        "Authorization": f"Bearer {stack_api.token('ops', admin=True)}",
    }
    frames: list[dict[str, object]] = []
    events: list[str] = []
    async with stack_api.session.get(f"{stack_api.base}/sales/{pid}", headers=headers) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        sold_during = asyncio.create_task(sale(stack_api, pid, 15))
        async with asyncio.timeout(30):
            event = "message"
            async for raw in stream.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    events.append(event)
                    if event == "message":
                        frames.append(orjson.loads(line[6:]))
                    event = "message"
                    last = frames[-1]["product"] if frames else None
                    if isinstance(last, dict) and last["available"] == 0 and sold_during.done():
                        break
        statuses = await sold_during
    assert events[0] == "history"
    assert statuses.count(201) == 10
    products = [f["product"] for f in frames if isinstance(f["product"], dict)]
    assert products[-1]["sold"] == 10
    assert products[-1]["orders"]["CREATED"] == 10
    # One frame a second, each later than the one before.
    times = [float(f["at"]) for f in frames]  # type: ignore[arg-type]
    assert times == sorted(times)
    calls = frames[-1]["orderCalls"]
    assert isinstance(calls, dict)
    assert calls["refusals"]["sold-out"] >= 5


async def test_the_relay_and_the_projector_export_their_throughput_and_lag(
    stack: Stack, stack_api: HttpApi
) -> None:
    pid = await new_product(stack_api, stock=5)
    assert (await sale(stack_api, pid, 5)).count(201) == 5
    relay_port = stack.metrics_ports["relay"][-1]
    projector_port = stack.metrics_ports["projector"][-1]
    async with asyncio.timeout(30):
        while True:
            async with stack_api.session.get(f"http://127.0.0.1:{relay_port}/metrics") as r:
                relay = await r.text()
            async with stack_api.session.get(f"http://127.0.0.1:{projector_port}/metrics") as r:
                projector = await r.text()
            published = re.search(r"^flashorder_relay_events_published_total (\S+)", relay, re.M)
            applied = re.search(
                r"^flashorder_projector_events_applied_total\{[^}]*\} (\S+)", projector, re.M
            )
            if published and applied and float(published[1]) >= 5 and float(applied[1]) >= 5:
                break
            await asyncio.sleep(0.5)
    assert "flashorder_relay_batch_duration_seconds_bucket" in relay
    assert "flashorder_projector_lag_seconds" in projector


@asynccontextmanager
async def watched(queues: list[dict[str, Any]]) -> AsyncIterator[None]:
    """On a timeout, say what the stream had shown."""
    try:
        yield
    except TimeoutError:
        pytest.fail(f"{len(queues)} frames, the last: {queues[-2:]}")


async def test_a_queued_product_shows_its_queue_and_its_draw_on_the_sale_stream(
    stack_api: HttpApi,
) -> None:
    pid = await new_queued_product(stack_api, stock=5, starts_in=6.0, rate=20.0)
    joins = [
        await stack_api.call(
            "POST", f"/api/v1/sales/{pid}/queue", token=stack_api.token(f"q{i}_{pid[-6:]}")
        )
        for i in range(12)
    ]
    assert [j.status for j in joins] == [201] * 12
    headers = {
        "accept": "text/event-stream",
        "Authorization": f"Bearer {stack_api.token('ops', admin=True)}",
    }
    queues: list[dict[str, Any]] = []

    async def look() -> None:
        # Buyers looking at their tickets keep the room served (and admitting).
        while True:
            for i, j in enumerate(joins):
                path = f"/api/v1/sales/{pid}/queue/{j.body['ticketId']}"
                await stack_api.call("GET", path, token=stack_api.token(f"q{i}_{pid[-6:]}"))
            await asyncio.sleep(0.3)

    looking = asyncio.create_task(look())
    try:
        async with (
            stack_api.session.get(f"{stack_api.base}/sales/{pid}", headers=headers) as s,
            watched(queues),
        ):
            assert s.status == 200
            async with asyncio.timeout(90):
                async for raw in s.content:
                    line = raw.decode()
                    if not line.startswith("data: {"):
                        continue
                    queue = orjson.loads(line[6:])["product"]["queue"]
                    queues.append(queue)
                    if queue["drawn"] and queue["admitted"] >= 1:
                        break
    finally:
        looking.cancel()
    before, after = queues[0], queues[-1]
    assert before["drawn"] is False
    assert before["waiting"] == 12
    assert before["joined"] == 12
    assert before["admissionPerSecond"] == 20.0
    assert after["drawn"] is True
    assert re.fullmatch(r"[0-9a-f]{16,}", after["seed"])
    assert after["drawAt"] == before["drawAt"]
    assert after["waiting"] + after["admitted"] == 12
    # A plain product's frame says it has no queue.
    plain = await new_product(stack_api, stock=1)
    async with stack_api.session.get(f"{stack_api.base}/sales/{plain}", headers=headers) as s:
        async with asyncio.timeout(20):
            async for raw in s.content:
                if raw.startswith(b"data: {"):
                    assert orjson.loads(raw[6:])["product"]["queue"] is None
                    break
