"""Open sale pages during a phase: ``N`` streams of server-sent events on
``/sales/{productId}`` (the admin bearer token, ``Accept: text/event-stream``, as the page's
``EventSource`` asks), each reading every frame as a browser would, and a tally of what each
one received. They run in the bench's parent process, whose CPU counts apart from the
stack's.

The stream (docs/operations.md): a ``history`` event, then one ``data:`` frame a second per
API process, each the JSON of the sale (``{"at", "product": {...}, "orderCalls", "lag"}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

#: How long the pages may take to open (their ``history`` event) before the sale starts.
OPEN_TIMEOUT_S = 30.0
#: A stream that sends nothing for this long is dead (a frame is due every second).
READ_TIMEOUT_S = 30.0


@dataclass
class ViewerTally:
    """What one open page received. ``frame_at`` holds the ``time.monotonic()`` of each data
    frame (the clock of the phase's samples), ``product`` the newest frame's product."""

    index: int
    status: int | None = None
    content_type: str = ""
    history: bool = False
    frames: int = 0
    bytes: int = 0
    frame_at: list[float] = field(default_factory=list)
    product: dict[str, Any] | None = None
    error: str | None = None

    def frames_between(self, start: float, end: float) -> int:
        return sum(start <= t <= end for t in self.frame_at)

    def sold_out(self, product_id: str) -> bool:
        """The newest frame shows ``product_id`` with nothing left."""
        p = self.product
        return p is not None and p.get("productId") == product_id and p.get("available") == 0


class Viewers:
    """``count`` open pages of ``product_id`` while the ``async with`` block runs: entering
    returns once every page has its ``history`` event (or failed, which its tally says)."""

    def __init__(
        self, base_url: str, product_id: str, count: int, headers: Mapping[str, str]
    ) -> None:
        self.url = f"{base_url}/sales/{product_id}"
        self.product_id = product_id
        self.headers = {**headers, "Accept": "text/event-stream"}
        self.tallies = [ViewerTally(i) for i in range(count)]
        self._opened = [asyncio.Event() for _ in range(count)]
        self._frame = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Viewers:
        # A session of their own: the bench's other calls keep their connection pool.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=READ_TIMEOUT_S),
        )
        self._tasks = [
            asyncio.create_task(self._read(tally), name=f"viewer-{tally.index}")
            for tally in self.tallies
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                await asyncio.gather(*(opened.wait() for opened in self._opened))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until every live page's newest frame shows the product sold out (the sale
        is over: its next frame says so), at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [t for t in self.tallies if t.error is None]
            if all(t.sold_out(self.product_id) for t in live):
                return
            self._frame.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self._frame.wait()

    async def _read(self, tally: ViewerTally) -> None:
        assert self._session is not None
        try:
            async with self._session.get(self.url, headers=self.headers) as answer:
                tally.status = answer.status
                tally.content_type = answer.headers.get("Content-Type", "")
                if answer.status != 200 or "text/event-stream" not in tally.content_type:
                    tally.error = f"answered {answer.status} {tally.content_type}"
                    return
                event, data = "message", b""
                # One SSE event per blank line: ``event:`` names it, ``data:`` carries it.
                async for raw in answer.content:
                    tally.bytes += len(raw)
                    line = raw.rstrip(b"\r\n")
                    if line.startswith(b"event:"):
                        event = line[6:].strip().decode()
                    elif line.startswith(b"data:"):
                        data += line[5:].lstrip()
                    elif not line:
                        if data:
                            self._dispatch(tally, event, data)
                        event, data = "message", b""
                tally.error = "the stream ended"
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            tally.error = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            self._opened[tally.index].set()

    def _dispatch(self, tally: ViewerTally, event: str, data: bytes) -> None:
        if event == "history":
            tally.history = True
            self._opened[tally.index].set()
            return
        tally.frames += 1
        tally.frame_at.append(time.monotonic())
        body = orjson.loads(data)
        product = body.get("product") if isinstance(body, dict) else None
        tally.product = product if isinstance(product, dict) else None
        self._frame.set()
