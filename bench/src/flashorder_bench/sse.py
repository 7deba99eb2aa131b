"""A lean reader of one server-sent-events stream (``text/event-stream``): the generator's
parser (httptools) on a connection of its own, the events as ``(event, data)`` pairs.

A waiting buyer of the queued drop holds one (``GET …/queue/{ticketId}/events``): thousands
of them in the bench's process, so each costs a socket and a parser, not a client object.
Comments (``: keep-alive``) and ``retry:`` lines are skipped; a multi-line ``data`` is joined
with newlines, as the SSE format says.
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools

#: One event: its name (``message`` when the stream names none) and its data.
Event = tuple[str, bytes]


class _Reader(asyncio.Protocol):
    def __init__(self) -> None:
        self.events: asyncio.Queue[Event | None] = asyncio.Queue()
        self.status = 0
        self.headers_done = asyncio.get_running_loop().create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._pending = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if not self.headers_done.done():
            self.headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._pending += body.replace(b"\r\n", b"\n")
        while b"\n\n" in self._pending:
            block, self._pending = self._pending.split(b"\n\n", 1)
            name, data = "message", []
            for line in block.split(b"\n"):
                if line.startswith(b"event:"):
                    name = line[6:].strip().decode()
                elif line.startswith(b"data:"):
                    value = line[5:]
                    data.append(value[1:] if value.startswith(b" ") else value)
            if data:
                self.events.put_nowait((name, b"\n".join(data)))

    def on_message_complete(self) -> None:
        self._end()

    def _end(self) -> None:
        if not self.headers_done.done():
            self.headers_done.set_exception(ConnectionResetError("closed before an answer"))
        self.events.put_nowait(None)

    def send(self, raw: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        self._transport.write(raw)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class EventStream:
    """One open stream. ``status`` is the answer's HTTP status (a stream is 200; any other
    answer ends at once); ``next`` waits for the next event, None once the stream ended."""

    def __init__(self, reader: _Reader) -> None:
        self._reader = reader

    @classmethod
    async def open(cls, host: str, port: int, request: bytes, *, timeout: float) -> EventStream:
        """Connect, send ``request`` (its encoded bytes) and wait for the answer's head.
        Raises OSError or TimeoutError."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, reader = await loop.create_connection(_Reader, host, port)
            stream = cls(reader)
            try:
                reader.send(request)
                await reader.headers_done
            except BaseException:
                stream.close()
                raise
        return stream

    @property
    def status(self) -> int:
        return self._reader.status

    async def next(self, timeout: float) -> Event | None:
        """The next event (TimeoutError if none comes within ``timeout``)."""
        async with asyncio.timeout(timeout):
            return await self._reader.events.get()

    def close(self) -> None:
        self._reader.close()
