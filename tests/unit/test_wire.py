"""The generator's HTTP client against a small server speaking HTTP/1.1 over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import uvloop

from flashorder_bench.wire import WireClient


class Server:
    """Answers each request by its path: ``/ok`` 200 with a body, ``/chunked`` a chunked
    body, ``/close`` 200 then closes, ``/slow`` never answers, ``/drop`` closes at once."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                path = head.split(b" ")[1]
                if path == b"/ok":
                    writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\n" + body[:4])
                elif path == b"/chunked":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                    )
                elif path == b"/close":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                    )
                    await writer.drain()
                    break
                elif path == b"/drop":
                    break
                # /slow: no answer
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def served() -> AsyncIterator[tuple[Server, str]]:
    server = Server()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        listener.close()


async def keep_alive_calls(url: str) -> tuple[list[tuple[int, bytes]], tuple[int, bytes]]:
    client = WireClient(url, timeout=2)
    raw = client.encode("POST", "/ok", {"Authorization": "Bearer t"}, b'{"a":1}')
    answers = [await client.call(raw) for _ in range(5)]
    chunked = await client.call(client.encode("GET", "/chunked", {}, None))
    client.close()
    return answers, chunked


async def test_calls_reuse_one_keep_alive_connection_and_read_status_and_body(
    served: tuple[Server, str],
) -> None:
    server, url = served

    answers, chunked = await keep_alive_calls(url)

    assert answers == [(201, b'{"a"')] * 5
    assert chunked == (200, b"abcde")
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST /ok HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nAuthorization: Bearer t\r\nContent-Length: 7\r\n\r\n" in server.requests[0]


async def test_concurrent_calls_each_get_a_connection_of_their_own(
    served: tuple[Server, str],
) -> None:
    server, url = served
    client = WireClient(url, timeout=2)
    raw = client.encode("POST", "/ok", {}, b"abcd")

    answers = await asyncio.gather(*(client.call(raw) for _ in range(20)))
    client.close()

    assert answers == [(201, b"abcd")] * 20
    assert server.connections == 20


async def test_a_connection_the_server_closes_is_not_reused(served: tuple[Server, str]) -> None:
    server, url = served
    client = WireClient(url, timeout=2)

    assert await client.call(client.encode("GET", "/close", {}, None)) == (200, b"")
    assert await client.call(client.encode("POST", "/ok", {}, b"next")) == (201, b"next")
    client.close()

    assert server.connections == 2


async def test_a_dropped_connection_raises_and_the_next_call_goes_through(
    served: tuple[Server, str],
) -> None:
    server, url = served
    client = WireClient(url, timeout=2)

    with pytest.raises(ConnectionError):
        await client.call(client.encode("GET", "/drop", {}, None))
    assert await client.call(client.encode("POST", "/ok", {}, b"live")) == (201, b"live")
    client.close()

    assert server.connections == 2


async def test_an_unanswered_call_times_out_and_its_connection_is_not_reused(
    served: tuple[Server, str],
) -> None:
    server, url = served
    client = WireClient(url, timeout=0.2)

    with pytest.raises(TimeoutError):
        await client.call(client.encode("GET", "/slow", {}, None))
    assert await client.call(client.encode("POST", "/ok", {}, b"late")) == (201, b"late")
    client.close()

    assert server.connections == 2


def test_only_plain_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="plain http"):
        WireClient("https://example.test", timeout=1)


def test_the_client_runs_on_uvloop_as_the_generator_does() -> None:
    # uvloop's transports are not asyncio's classes: the client must not care.
    async def scenario() -> tuple[int, list[tuple[int, bytes]]]:
        server = Server()
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            answers, _ = await keep_alive_calls(f"http://127.0.0.1:{port}")
        finally:
            listener.close()
        return server.connections, answers

    connections, answers = uvloop.run(scenario())

    assert answers == [(201, b'{"a"')] * 5
    assert connections == 1


async def test_a_connection_idle_too_long_or_closed_by_the_server_is_not_reused(
    served: tuple[Server, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = served
    client = WireClient(url, timeout=2)
    raw = client.encode("POST", "/ok", {}, b"abcd")
    assert await client.call(raw) == (201, b"abcd")

    monkeypatch.setattr("flashorder_bench.wire.MAX_IDLE_SECONDS", 0.0)
    assert await client.call(raw) == (201, b"abcd")  # the idle one was too old: a new one
    monkeypatch.undo()
    assert server.connections == 2

    # The server drops its side of the idle connection; the next call must not use it.
    listener_side = server.writers[-1]
    listener_side.close()
    await asyncio.sleep(0.05)
    assert await client.call(raw) == (201, b"abcd")
    client.close()
    assert server.connections == 3
