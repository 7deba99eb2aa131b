"""The least an HTTP front does in Python: a raw ASGI app, served by uvicorn as the API is
(uvloop, httptools, no access log), that reads a request's body and answers 201 with a fixed
JSON document the size of an order's answer. No framework, no validation, no token check.

``wrk.bare_front`` drives it with wrk: its CPU per call is the floor under the echo route's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: An order's answer as the API gives it, in size and shape.
ANSWER = (
    b'{"orderId":"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","userId":"u-wrk","status":"CREATED",'
    b'"items":[{"productId":"P-wrk","quantity":1,"unitPrice":10000}],"discountPolicyId":null,'
    b'"discountAmount":0,"deliveryFee":0,"paymentAmount":10000,"paymentType":"CREDIT",'
    b'"version":1,"createdAt":"2026-12-03T08:00:00.000000Z","payBy":"2026-12-03T08:10:00.000000Z"}'
)
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(ANSWER)).encode()),
]


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 201, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
