"""A TCP link that a test opens and cuts: a server seen through it is down, then back.

It forwards a local port to a real server (the suite's MariaDB or Redis). Cut, it listens no
more (connections are refused, as by a stopped server) and closes every connection it
carried (as a server that died would). The real server goes on serving everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class Link:
    port: int
    target_host: str
    target_port: int
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._carry, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _carry(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, server_w}
        try:
            # A broken pipe ends its direction only (returned, not raised); cutting the link
            # aborts both transports, which ends the other.
            await asyncio.gather(
                _pipe(client_r, server_w), _pipe(server_r, client_w), return_exceptions=True
            )
        except asyncio.CancelledError:
            # The test's loop is closing: the connection dies with it (asyncio's server would
            # otherwise log the cancelled handler as an error).
            pass
        finally:
            for writer in (client_w, server_w):
                self._writers.discard(writer)
                writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()
