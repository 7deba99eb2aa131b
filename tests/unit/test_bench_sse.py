"""The bench's lean server-sent-events reader, fed the bytes a server sends."""

from __future__ import annotations

import asyncio

from flashorder_bench.sse import EventStream

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


async def serve(
    answer: list[bytes], pause: float = 0.0
) -> tuple[asyncio.Server, int, asyncio.Event]:
    """A server that answers one request with ``answer``, its parts ``pause`` apart; the
    event is set once it closed the connection."""
    served = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for part in answer:
            await asyncio.sleep(pause)
            writer.write(part)
            await writer.drain()
        writer.close()
        await writer.wait_closed()
        served.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], served


async def test_events_come_named_and_whole_across_chunks_and_comments_are_skipped() -> None:
    server, port, served = await serve(
        [
            HEAD,
            chunk(b"retry: 2000\n\n"),
            chunk(b'event: ticket\ndata: {"status":'),
            chunk(b'"WAITING"}\n\n: keep-alive\n\n'),
            chunk(b"data: line one\r\ndata:line two\r\n\r\n"),
            b"0\r\n\r\n",
        ],
        pause=0.01,
    )
    async with server:
        stream = await EventStream.open(
            "127.0.0.1", port, b"GET /e HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5
        )
        assert stream.status == 200
        assert await stream.next(5) == ("ticket", b'{"status":"WAITING"}')
        assert await stream.next(5) == ("message", b"line one\nline two")
        assert await stream.next(5) is None
        stream.close()
        await served.wait()


async def test_a_refusal_is_its_status_and_an_end() -> None:
    body = b'{"type":"urn:flashorder:problem:not-found"}'
    server, port, served = await serve(
        [b"HTTP/1.1 404 Not Found\r\ncontent-length: %d\r\n\r\n" % len(body) + body]
    )
    async with server:
        stream = await EventStream.open(
            "127.0.0.1", port, b"GET /e HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5
        )
        assert stream.status == 404
        assert await stream.next(5) is None
        stream.close()
        await served.wait()
