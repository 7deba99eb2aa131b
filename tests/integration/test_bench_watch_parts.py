"""The bench's open sale pages and its OTLP sink over real sockets (no stack): the pages
read a stream as ``EventSource`` does, and the sink counts what the service's own exporter
sends it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from flashorder_bench.otlp_sink import Sink, SinkStats
from flashorder_bench.stack import free_port
from flashorder_bench.viewers import Viewers

ADMIN = {"Authorization": "Bearer admin"}
CLOSING = web.AppKey("closing", asyncio.Event)


async def _sale_stream(request: web.Request) -> web.StreamResponse:
    """A sale page's stream as the service sends it: history, then a frame per tick, the
    last one showing the product sold out."""
    if request.headers.get("Authorization") != "Bearer admin":
        return web.json_response({"type": "unauthorized"}, status=401)
    answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await answer.prepare(request)
    await answer.write(b'retry: 2000\nevent: history\ndata: [{"at": 1}]\n\n')
    product = request.match_info["product"]
    for available in (5, 2, 0):
        frame = f'{{"at": 2, "product": {{"productId": "{product}", "available": {available}}}}}'
        await answer.write(b"data: " + frame.encode() + b"\n\n")
        await asyncio.sleep(0.05)
    # Open until the site closes, as the service's stream stays open until the page leaves.
    await request.app[CLOSING].wait()
    return answer


@pytest.fixture
async def sale_site() -> AsyncIterator[str]:
    app = web.Application()
    app[CLOSING] = asyncio.Event()
    app.router.add_get("/sales/{product}", _sale_stream)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    app[CLOSING].set()
    await runner.cleanup()


async def test_open_pages_read_the_history_then_every_frame_until_sold_out(
    sale_site: str,
) -> None:
    async with Viewers(sale_site, "P-1", 3, ADMIN) as pages:
        assert all(t.history and t.status == 200 for t in pages.tallies)
        await pages.settle(timeout=5)
    for tally in pages.tallies:
        assert tally.error is None
        assert tally.frames == 3
        assert tally.sold_out("P-1")
        assert not tally.sold_out("P-2")


async def test_a_page_refused_says_so_and_receives_nothing(sale_site: str) -> None:
    async with Viewers(sale_site, "P-1", 2, {"Authorization": "Bearer nobody"}) as pages:
        await pages.settle(timeout=0.5)
    for tally in pages.tallies:
        assert tally.status == 401
        assert tally.frames == 0
        assert not tally.history
        assert tally.error is not None
        assert "401" in tally.error


def test_the_sink_counts_the_spans_the_otlp_exporter_sends() -> None:
    sink = Sink(free_port())
    sink.start()
    try:
        assert sink.stats() == SinkStats()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=sink.endpoint)))
        tracer = provider.get_tracer("test")
        for n in range(5):
            with tracer.start_as_current_span(f"span-{n}"):
                pass
        provider.shutdown()
        got = sink.stats()
        assert (got.exports, got.spans, got.rejected) == (5, 5, 0)
        assert got.bytes > 0
    finally:
        sink.stop()
    assert sink.pid is None
