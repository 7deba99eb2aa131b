"""The waiting room of a queued sale (docs/waiting-room.md): join, look, follow, leave.

A buyer joins with ``POST /api/v1/sales/{productId}/queue`` and gets a ticket; once it says
``ADMITTED`` it carries the ``admissionToken`` that the order call needs as its
``Admission-Token`` header. ``…/queue/{ticketId}/events`` streams the ticket's changes as
server-sent events, so that a crowd of waiting pages does not poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

import orjson
from fastapi import APIRouter
from starlette.responses import Response, StreamingResponse

from flashorder.application.waiting_room import WaitingRoom
from flashorder.bootstrap import Service
from flashorder.domain.model import ProductId, UserId
from flashorder.entrypoints.api.admission import RATE_LIMITED, AdmittedDep
from flashorder.entrypoints.api.auth import AUTH_RESPONSES, AdminDep, Principal, UserDep
from flashorder.entrypoints.api.deps import ServiceDep
from flashorder.entrypoints.api.problems import ProblemType, documented
from flashorder.entrypoints.api.schemas import Ident, QueueStatsOut, TicketOut

router = APIRouter(prefix="/api/v1/sales", tags=["queue"], responses=AUTH_RESPONSES)

_NOT_FOUND = documented(
    "No such product, not a queued sale, or no such ticket of yours", ProblemType.NOT_FOUND
)
T = TypeVar("T")

#: A stream sends a comment this often, so that proxies keep an idle connection open.
HEARTBEAT_SECONDS = 15.0


def room_of(service: Service) -> WaitingRoom:
    assert service.waiting_room is not None
    return service.waiting_room


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _viewer(principal: Principal) -> UserId | None:
    return None if principal.admin else principal.user_id


@router.post(
    "/{product_id}/queue",
    response_model=TicketOut,
    status_code=201,
    summary="Join a queued sale's line (a retry gets the same ticket)",
    description="One ticket per buyer and sale: a retry answers the same ticket (200). "
    "Those who join before the sale's start are put in a random order at the start; later "
    "ones follow in arrival order. After leaving, or after an admission that passed unused, "
    "a join takes a new place.",
    responses={
        200: {"description": "The buyer's ticket, taken before", "model": TicketOut},
        404: _NOT_FOUND,
        409: documented(
            "The queue opens later (`Retry-After`), or the sale has ended",
            ProblemType.QUEUE_NOT_OPEN,
            ProblemType.SALE_ENDED,
        ),
        **RATE_LIMITED,
    },
)
async def join_queue(product_id: Ident, service: ServiceDep, principal: AdmittedDep) -> Response:
    view, new = await room_of(service).join(ProductId(product_id), principal.user_id)
    return _json(view.as_json(), 201 if new else 200)


@router.get(
    "/{product_id}/queue",
    response_model=QueueStatsOut,
    summary="A queued sale's line in figures, with the draw's seed (admin)",
    responses={404: _NOT_FOUND},
)
async def get_queue_stats(product_id: Ident, service: ServiceDep, _: AdminDep) -> Response:
    stats = await room_of(service).stats(ProductId(product_id))
    return _json(stats.as_json())


@router.get(
    "/{product_id}/queue/{ticket_id}",
    response_model=TicketOut,
    summary="Where am I: a ticket's status, position and estimated wait",
    description="The buyer's own ticket (an admin's token reads any).",
    responses={404: _NOT_FOUND},
)
async def get_ticket(
    product_id: Ident, ticket_id: Ident, service: ServiceDep, principal: UserDep
) -> Response:
    view = await room_of(service).ticket(
        ProductId(product_id), ticket_id, viewer=_viewer(principal)
    )
    return _json(view.as_json())


@router.delete(
    "/{product_id}/queue/{ticket_id}",
    response_model=TicketOut,
    summary="Leave the line (or give an admission up)",
    responses={404: _NOT_FOUND},
)
async def leave_queue(
    product_id: Ident, ticket_id: Ident, service: ServiceDep, principal: UserDep
) -> Response:
    view = await room_of(service).leave(ProductId(product_id), ticket_id, viewer=_viewer(principal))
    return _json(view.as_json())


@router.get(
    "/{product_id}/queue/{ticket_id}/events",
    summary="Follow a ticket: server-sent events",
    description="`text/event-stream`: an `event: ticket` with the ticket (as the `GET` "
    "answers it) now and at each change, until it is LEFT, EXPIRED or ORDERED. Every stream "
    "of a process is fed by one admission step per tick, not by a read each.",
    responses={
        200: {"description": "The stream", "content": {"text/event-stream": {}}},
        404: _NOT_FOUND,
    },
)
async def follow_ticket(
    product_id: Ident, ticket_id: Ident, service: ServiceDep, principal: UserDep
) -> Response:
    room = room_of(service)
    pid, viewer = ProductId(product_id), _viewer(principal)
    # Read once before the answer starts, so that an unknown ticket is a 404 problem.
    await room.ticket(pid, ticket_id, viewer=viewer)

    async def events() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        async for view in with_heartbeat(room.follow(pid, ticket_id, viewer=viewer)):
            if view is None:
                yield b": keep-alive\n\n"
            else:
                yield b"event: ticket\ndata: " + orjson.dumps(view.as_json()) + b"\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def with_heartbeat(source: AsyncIterator[T]) -> AsyncGenerator[T | None, None]:
    """The items of ``source``, and None whenever it says nothing for a heartbeat's time."""

    async def next_item() -> T:
        return await anext(source)

    pending: asyncio.Task[T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.create_task(next_item())
            done, _ = await asyncio.wait({pending}, timeout=HEARTBEAT_SECONDS)
            if not done:
                yield None
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        if pending is not None:
            # Let the cancelled step unwind the generator before closing it: closing a
            # generator that a task is still running raises.
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
