"""The load generator's HTTP/1.1 client: keep-alive connections and a C response parser.

On a two-core machine the generator takes its CPU from the service it measures, so what it
spends per call matters. A general client (aiohttp) builds request and response objects,
header multidicts and timers for every call: about a millisecond of CPU per call here. This
one writes the request bytes as they are and parses the answer with httptools (llhttp, the
parser uvicorn uses), keeping only the status and the body: a fraction of that.

One connection carries one call at a time. ``WireClient`` keeps the idle ones and opens a
new one when none is free; a connection whose call failed or timed out is closed, never
reused, so a late answer can never be read as the next call's. An idle connection is not
reused once the server may have closed it (uvicorn closes keep-alive connections idle for
5 s): a request written into a connection the server is closing would fail without having
been read, which the generator would count against the service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools

#: Idle connections older than this are closed rather than reused: under uvicorn's default
#: keep-alive timeout (5 s), with room for the server's timer and ours to disagree.
MAX_IDLE_SECONDS = 3.0


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.idle_since = 0.0
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._chunks: list[bytes] = []
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.reusable = True

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    # httptools callbacks

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        body = b"".join(self._chunks)
        self._chunks.clear()
        self.reusable = self._parser.should_keep_alive()
        if self._answer is not None and not self._answer.done():
            self._answer.set_result((status, body))

    # the client's side

    def usable(self, now: float) -> bool:
        return (
            self.reusable
            and self._transport is not None
            and not self._transport.is_closing()
            and now - self.idle_since < MAX_IDLE_SECONDS
        )

    def send(self, raw: bytes) -> asyncio.Future[tuple[int, bytes]]:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        return self._answer

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.close()

    def _fail(self, exc: BaseException) -> None:
        self.reusable = False
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)
        if self._transport is not None:
            self._transport.close()


class WireClient:
    """Calls to one origin (``http://host:port``) over keep-alive connections."""

    def __init__(self, base_url: str, *, timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"the generator speaks plain http to host:port, not {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._authority = parts.netloc.encode()
        self._timeout = timeout
        self._idle: list[_Connection] = []

    def encode(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> bytes:
        """The bytes of a request, to send with ``call``."""
        lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + self._authority]
        lines += [f"{name}: {value}".encode() for name, value in headers.items()]
        if body is not None:
            lines.append(b"Content-Length: %d" % len(body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")

    async def call(self, raw: bytes) -> tuple[int, bytes]:
        """Send one encoded request; its status and body. Raises OSError, TimeoutError or
        httptools.HttpParserError."""
        connection = self._idle_connection() or await self._connect()
        try:
            async with asyncio.timeout(self._timeout):
                answer = await connection.send(raw)
        except BaseException:
            connection.close()
            raise
        if connection.reusable:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()
        return answer

    def _idle_connection(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()  # the most recently used first
            if connection.usable(now):
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._timeout):
            _, connection = await loop.create_connection(_Connection, self._host, self._port)
        return connection

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
