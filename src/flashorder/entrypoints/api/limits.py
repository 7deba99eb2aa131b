"""Admission limits that act before a request's headers or body are parsed."""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flashorder.entrypoints.api.problems import CASES, MEDIA_TYPE, ProblemType, problem_body


class SizeLimits:
    """Refuse headers over ``max_header_bytes`` in all with 431, before anything reads them
    (a bearer token of a megabyte is never decoded), and bodies over ``max_bytes`` with 413,
    whether or not they declare a length.

    A pure ASGI middleware: it counts the body's bytes as they arrive, so a body that lies
    about its Content-Length (or streams in chunks) is cut off too.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header_bytes = 0
        for name, value in scope["headers"]:
            header_bytes += len(name) + len(value)
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await _refuse(send, ProblemType.PAYLOAD_TOO_LARGE, self._body_detail)
                return
        if header_bytes > self.max_header_bytes:
            await _refuse(
                send,
                ProblemType.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"the headers are limited to {self.max_header_bytes} bytes in all",
            )
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
                    raise HTTPException(413, self._body_detail)
            return message

        await self.app(scope, counted_receive, send)

    @property
    def _body_detail(self) -> str:
        return f"the body is limited to {self.max_bytes} bytes"


async def _refuse(send: Send, type_: ProblemType, detail: str) -> None:
    body = orjson.dumps(problem_body(type_, detail))
    await send(
        {
            "type": "http.response.start",
            "status": CASES[type_][0],
            "headers": [
                (b"content-type", MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
