"""Admission limits that act before a request body is parsed."""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flashorder.entrypoints.api.problems import MEDIA_TYPE, ProblemType, problem_body


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413, whether or not they declare a length.

    A pure ASGI middleware: it counts the bytes as they arrive, so a body that lies about its
    Content-Length (or streams in chunks) is cut off too.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await self._refuse(send)
                return
        seen = 0

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Raised inside body parsing, which lets HTTPException through to the
                    # problem handlers.
                    raise HTTPException(413, f"the body is limited to {self.max_bytes} bytes")
            return message

        await self.app(scope, counted_receive, send)

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps(
            problem_body(
                ProblemType.PAYLOAD_TOO_LARGE, f"the body is limited to {self.max_bytes} bytes"
            )
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
